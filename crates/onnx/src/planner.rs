//! [`OnnxPlanner`]: any ONNX planner as the frozen planner refinement builds on, run by tract
//! (pure Rust, nothing fetched at build time).
//!
//! Loading checks everything a model can get wrong before a step is driven, each with its own
//! error ([`OnnxError`]): a file that is not ONNX, a missing or invalid spec, an operator tract
//! does not implement, an input that is not `[batch, OBS_DIM]` (or, for a raster planner,
//! `[batch, C, H, W]` as its spec's raster), a named output the graph lacks, a horizon or
//! waypoint spacing the simulator does not use. Planning refuses non-finite outputs, naming
//! the row.
//!
//! A raster planner (`kind = "bev"`) reads observations that carry the raster after the vector
//! (`deltaplan_sim::BatchEnv::with_bev_observation`); each chunk's rows are split into the
//! raster input and, if the model has one, the vector input.
//!
//! Batches run in fixed chunks of [`CHUNK_ROWS`] rows (tract runs one inference on one thread),
//! side by side on rayon's pool; the chunking never depends on the thread count, so results
//! are the same bits for any number of threads. A model with a fixed batch size runs chunks of
//! exactly that size (the last one padded with zero rows, whose outputs are dropped).

use std::path::Path;
use std::sync::Arc;

use deltaplan_learn::planner::{FrozenPlanner, PlannerError};
use deltaplan_sim::{BevSpec, SimConfig, OBS_DIM};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use crate::error::{OnnxError, Result};
use crate::spec::{sidecar_path, ObservationKind, PlannerSpec, SPEC_KEY};

/// Rows per tract inference when the batch dimension is dynamic.
pub const CHUNK_ROWS: usize = 64;

type Plan = Arc<TypedRunnableModel>;

/// The batch dimension of the model's observation input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchDim {
    /// Symbolic: any number of rows per inference.
    Dynamic,
    /// Exactly this many rows per inference.
    Fixed(usize),
}

/// An ONNX planner loaded for a simulator configuration (see the module docs).
pub struct OnnxPlanner {
    path: String,
    spec: PlannerSpec,
    plan: Plan,
    batch: BatchDim,
    /// Floats per observation: the vector, plus the raster for a raster planner.
    obs_dim: usize,
    /// The raster a raster planner reads after the vector, and whether it is also fed the
    /// vector (its second input).
    raster: Option<(BevSpec, bool)>,
    embedding_dim: usize,
    obs_mean: Vec<f32>,
    obs_std: Vec<f32>,
    hash: String,
    /// The file's bytes (the export embeds the graph as it was given).
    bytes: Vec<u8>,
}

impl std::fmt::Debug for OnnxPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxPlanner")
            .field("path", &self.path)
            .field("batch", &self.batch)
            .field("horizon", &self.spec.output.horizon)
            .field("embedding_dim", &self.embedding_dim)
            .field("hash", &self.hash)
            .finish()
    }
}

/// Scratch memory of [`OnnxPlanner`]'s `plan_batch` (the padded chunk of a fixed-batch model).
#[derive(Debug, Default)]
pub struct OnnxWorkspace {
    chunks: Vec<Chunk>,
}

/// One chunk's inputs and outputs, kept between calls.
#[derive(Debug, Default)]
struct Chunk {
    /// The first input: the vector observations, or the rasters of a raster planner.
    input: Vec<f32>,
    /// A raster planner's vector input.
    vector: Vec<f32>,
    plans: Vec<f32>,
    embedding: Vec<f32>,
    error: Option<PlannerError>,
}

impl OnnxPlanner {
    /// Loads `path` (spec from its metadata or its sidecar TOML) for the simulator `sim`: the
    /// vector observation of [`OBS_DIM`] floats, `sim.horizon` waypoints
    /// `sim.controller.waypoint_dt` apart.
    pub fn load(path: &Path, sim: &SimConfig) -> Result<Self> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Read {
            path: shown.clone(),
            source,
        })?;
        let proto = decode_model(&shown, &bytes)?;
        let (spec, spec_bytes) = read_spec(path, &proto)?;
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        if let Some(sidecar) = &spec_bytes {
            hasher.update(sidecar);
        }
        let hash = format!("{:x}", hasher.finalize());
        let mut p = Self::from_proto(&shown, &proto, spec, sim)?;
        p.hash = hash;
        p.bytes = bytes;
        Ok(p)
    }

    /// The spec the planner was loaded with.
    pub fn spec(&self) -> &PlannerSpec {
        &self.spec
    }

    /// The model's batch dimension.
    pub fn batch_dim(&self) -> BatchDim {
        self.batch
    }

    /// The file's bytes, as loaded.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// [`OnnxPlanner::check_and_build`], with a panic inside tract (its graph analysis indexes
    /// maps a malformed graph lacks entries in: fuzzing found `no entry found for key`) turned
    /// into an error naming the file, so a damaged model never crashes the program.
    fn from_proto(
        shown: &str,
        proto: &pb::ModelProto,
        spec: PlannerSpec,
        sim: &SimConfig,
    ) -> Result<Self> {
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::check_and_build(shown, proto, spec, sim)
        }));
        built.unwrap_or_else(|panic| {
            Err(OnnxError::Tract {
                path: shown.into(),
                stage: "read",
                message: format!(
                    "tract panicked ({}): the graph is malformed",
                    deltaplan_stdx::panic_message(panic.as_ref())
                ),
            })
        })
    }

    /// Every load-time check, then tract's typed, optimised plan.
    fn check_and_build(
        shown: &str,
        proto: &pb::ModelProto,
        spec: PlannerSpec,
        sim: &SimConfig,
    ) -> Result<Self> {
        let graph = proto.graph.as_ref().ok_or_else(|| OnnxError::Corrupt {
            path: shown.into(),
            reason: "the model has no graph".into(),
        })?;
        check_operators(shown, graph)?;
        let input = observation_input(shown, graph, &spec)?;
        let raster = match (spec.observation.kind, spec.observation.bev) {
            (ObservationKind::Bev, Some(bev)) => Some(bev),
            _ => None,
        };
        let batch = match raster {
            Some(bev) => check_input_shape(shown, input, &raster_shape(&bev), "bev")?,
            None => check_input_shape(shown, input, &[OBS_DIM], "vector")?,
        };
        let vector_input = match &spec.observation.vector_input {
            Some(name) => {
                let info = named_input(shown, graph, name, "observation.vector_input")?;
                let vector_batch = check_input_shape(shown, info, &[OBS_DIM], "vector")?;
                if vector_batch != batch {
                    return Err(OnnxError::InputShape {
                        path: shown.into(),
                        input: name.clone(),
                        kind: "vector",
                        found: format!("batch {vector_batch:?}"),
                        expected: format!("the raster input's batch, {batch:?}"),
                    });
                }
                Some(info.name.as_str())
            }
            None => None,
        };
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let mut wanted = vec![spec.output.waypoints.as_str()];
        wanted.extend(spec.output.embedding.as_deref());
        for (role, name) in ["waypoints", "embedding"].into_iter().zip(&wanted) {
            if !outputs.contains(name) {
                return Err(OnnxError::MissingOutput {
                    path: shown.into(),
                    role,
                    name: name.to_string(),
                    available: outputs.join(", "),
                });
            }
        }
        let found_dt = spec.output.waypoint_dt;
        if spec.output.horizon != sim.horizon
            || (found_dt - sim.controller.waypoint_dt).abs() > 1e-6
        {
            return Err(OnnxError::Horizon {
                path: shown.into(),
                found: spec.output.horizon,
                according: "its spec".into(),
                found_dt,
                expected: sim.horizon,
                expected_dt: sim.controller.waypoint_dt,
            });
        }

        let tract_err = |stage: &'static str| {
            move |e: TractError| OnnxError::Tract {
                path: shown.into(),
                stage,
                message: format!("{e:#}"),
            }
        };
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(tract_err("read"))?;
        let mut names = vec![input.name.as_str()];
        names.extend(vector_input);
        model
            .select_inputs_by_name(names)
            .map_err(tract_err("select the observation inputs of"))?;
        let rows: TDim = match batch {
            BatchDim::Fixed(n) => n.into(),
            BatchDim::Dynamic => model.sym("batch").into(),
        };
        let first: Vec<TDim> = match raster {
            Some(bev) => std::iter::once(rows.clone())
                .chain(raster_shape(&bev).into_iter().map(TDim::from))
                .collect(),
            None => vec![rows.clone(), OBS_DIM.into()],
        };
        model
            .set_input_fact(0, f32::fact(first).into())
            .map_err(tract_err("set the input shape of"))?;
        if vector_input.is_some() {
            model
                .set_input_fact(1, f32::fact([rows, OBS_DIM.into()]).into())
                .map_err(tract_err("set the vector input shape of"))?;
        }
        model
            .select_outputs_by_name(wanted.iter().copied())
            .map_err(tract_err("select the outputs of"))?;
        let typed = model.into_typed().map_err(tract_err("analyse"))?;
        let a = 2 * spec.output.horizon;
        let wp_fact = typed.output_fact(0).map_err(tract_err("type"))?.clone();
        check_waypoints_shape(shown, &spec, &wp_fact, sim.horizon)?;
        let embedding_dim = match &spec.output.embedding {
            Some(name) => {
                let fact = typed.output_fact(1).map_err(tract_err("type"))?;
                embedding_width(shown, name, fact)?
            }
            None => 0,
        };
        debug_assert_eq!(a, sim.action_dim());
        let plan = typed
            .into_optimized()
            .map_err(tract_err("optimise"))?
            .into_runnable()
            .map_err(tract_err("prepare"))?;
        let (obs_mean, obs_std) = match &spec.normalisation {
            Some(n) => {
                for (field, len) in [("obs_mean", n.obs_mean.len()), ("obs_std", n.obs_std.len())] {
                    if len != OBS_DIM {
                        return Err(OnnxError::BadSpec {
                            path: shown.into(),
                            source_of_spec: "normalisation".into(),
                            reason: format!(
                                "normalisation.{field} has {len} values, the observation {OBS_DIM}"
                            ),
                        });
                    }
                }
                (n.obs_mean.clone(), n.obs_std.clone())
            }
            None => (vec![0.0; OBS_DIM], vec![1.0; OBS_DIM]),
        };
        let with_vector = vector_input.is_some();
        Ok(OnnxPlanner {
            path: shown.into(),
            spec,
            plan,
            batch,
            obs_dim: OBS_DIM + raster.map_or(0, |b| b.len()),
            raster: raster.map(|b| (b, with_vector)),
            embedding_dim,
            obs_mean,
            obs_std,
            hash: String::new(),
            bytes: Vec::new(),
        })
    }

    /// Runs one chunk (`rows` observations, padded to the fixed batch if there is one) into
    /// `chunk`'s output buffers.
    fn run_chunk(&self, obs: &[f32], chunk: &mut Chunk) -> std::result::Result<(), PlannerError> {
        let rows = obs.len() / self.obs_dim;
        let run_rows = match self.batch {
            BatchDim::Fixed(n) => n,
            BatchDim::Dynamic => rows,
        };
        let failed = |e: TractError| {
            PlannerError::Failed(format!("the ONNX planner {} failed: {e:#}", self.path))
        };
        let inputs = match self.raster {
            None => {
                chunk.input.clear();
                chunk.input.extend_from_slice(obs);
                chunk.input.resize(run_rows * self.obs_dim, 0.0);
                tvec!(Tensor::from_shape(&[run_rows, self.obs_dim], &chunk.input)
                    .map_err(failed)?
                    .into())
            }
            Some((bev, with_vector)) => {
                let r = bev.len();
                chunk.input.clear();
                chunk.vector.clear();
                for row in obs.chunks_exact(self.obs_dim) {
                    chunk.input.extend_from_slice(&row[OBS_DIM..]);
                    chunk.vector.extend_from_slice(&row[..OBS_DIM]);
                }
                chunk.input.resize(run_rows * r, 0.0);
                chunk.vector.resize(run_rows * OBS_DIM, 0.0);
                let [c, h, w] = raster_shape(&bev);
                let raster = Tensor::from_shape(&[run_rows, c, h, w], &chunk.input);
                let mut inputs = tvec!(raster.map_err(failed)?.into());
                if with_vector {
                    let vector = Tensor::from_shape(&[run_rows, OBS_DIM], &chunk.vector);
                    inputs.push(vector.map_err(failed)?.into());
                }
                inputs
            }
        };
        let out = self.plan.run(inputs).map_err(failed)?;
        let a = 2 * self.spec.output.horizon;
        let wp = out[0].try_as_plain_ram().map_err(failed)?;
        chunk.plans.clear();
        chunk
            .plans
            .extend_from_slice(&wp.as_slice::<f32>().map_err(failed)?[..rows * a]);
        chunk.embedding.clear();
        if self.embedding_dim > 0 {
            let z = out[1].try_as_plain_ram().map_err(failed)?;
            chunk.embedding.extend_from_slice(
                &z.as_slice::<f32>().map_err(failed)?[..rows * self.embedding_dim],
            );
        }
        Ok(())
    }

    /// Rows per chunk.
    fn chunk_rows(&self) -> usize {
        match self.batch {
            BatchDim::Fixed(n) => n,
            BatchDim::Dynamic => CHUNK_ROWS,
        }
    }
}

impl FrozenPlanner for OnnxPlanner {
    type Workspace = OnnxWorkspace;

    fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    fn horizon(&self) -> usize {
        self.spec.output.horizon
    }

    fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    fn plan_batch(
        &self,
        obs: &[f32],
        ws: &mut OnnxWorkspace,
        plans_out: &mut [f32],
        embedding_out: &mut [f32],
    ) -> std::result::Result<(), PlannerError> {
        let (d, a, e) = (self.obs_dim, self.action_dim(), self.embedding_dim);
        if !obs.len().is_multiple_of(d) {
            return Err(PlannerError::Shape(format!(
                "{} observation floats are not a multiple of {d}",
                obs.len()
            )));
        }
        let b = obs.len() / d;
        if plans_out.len() != b * a || embedding_out.len() != b * e {
            return Err(PlannerError::Shape(format!(
                "{b} observations need {} plan floats and {} embedding floats, got {} and {}",
                b * a,
                b * e,
                plans_out.len(),
                embedding_out.len()
            )));
        }
        let rows = self.chunk_rows();
        let n_chunks = b.div_ceil(rows);
        if ws.chunks.len() < n_chunks {
            ws.chunks.resize_with(n_chunks, Chunk::default);
        }
        ws.chunks[..n_chunks]
            .par_iter_mut()
            .zip(obs.par_chunks(rows * d))
            .for_each(|(chunk, o)| chunk.error = self.run_chunk(o, chunk).err());
        for (k, chunk) in ws.chunks[..n_chunks].iter_mut().enumerate() {
            if let Some(err) = chunk.error.take() {
                return Err(err);
            }
            let r0 = k * rows;
            let n = chunk.plans.len() / a;
            plans_out[r0 * a..(r0 + n) * a].copy_from_slice(&chunk.plans);
            embedding_out[r0 * e..(r0 + n) * e].copy_from_slice(&chunk.embedding);
        }
        if let Some(i) = plans_out
            .iter()
            .chain(embedding_out.iter())
            .position(|v| !v.is_finite())
        {
            let (what, row) = if i < plans_out.len() {
                ("waypoint", i / a)
            } else {
                ("embedding value", (i - plans_out.len()) / e.max(1))
            };
            return Err(PlannerError::Failed(format!(
                "the ONNX planner {} returned a non-finite {what} for observation {row} of the \
                 batch: check the model on such inputs (divisions, logs, normalisation by a zero \
                 std)",
                self.path
            )));
        }
        Ok(())
    }

    fn obs_normalisation(&self) -> (&[f32], &[f32]) {
        (&self.obs_mean, &self.obs_std)
    }

    fn bev_observation(&self) -> Option<BevSpec> {
        self.raster.map(|(bev, _)| bev)
    }

    fn residual_obs_dim(&self) -> usize {
        OBS_DIM
    }

    fn weights_hash(&self) -> String {
        self.hash.clone()
    }
}

/// Decodes the protobuf, refusing what is not an ONNX model.
pub(crate) fn decode_model(shown: &str, bytes: &[u8]) -> Result<pb::ModelProto> {
    let proto =
        <pb::ModelProto as prost::Message>::decode(bytes).map_err(|e| OnnxError::Corrupt {
            path: shown.into(),
            reason: format!("protobuf decoding failed: {e}"),
        })?;
    if proto.graph.is_none() || proto.opset_import.is_empty() {
        return Err(OnnxError::Corrupt {
            path: shown.into(),
            reason: "no graph or no operator set: this is not an ONNX model".into(),
        });
    }
    Ok(proto)
}

/// The spec from the model's metadata or its sidecar file (never both), with the sidecar's
/// bytes (hashed with the model, as they change what the residual sees).
fn read_spec(path: &Path, proto: &pb::ModelProto) -> Result<(PlannerSpec, Option<Vec<u8>>)> {
    let shown = path.display().to_string();
    let sidecar = sidecar_path(path);
    let embedded = proto
        .metadata_props
        .iter()
        .find(|p| p.key == SPEC_KEY)
        .map(|p| p.value.clone());
    let side = match std::fs::read(&sidecar) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(OnnxError::Read {
                path: sidecar.display().to_string(),
                source,
            })
        }
    };
    let bad = |source_of_spec: String, reason: String| OnnxError::BadSpec {
        path: shown.clone(),
        source_of_spec,
        reason,
    };
    match (embedded, side) {
        (Some(_), Some(_)) => Err(bad(
            format!("metadata `{SPEC_KEY}` and {}", sidecar.display()),
            "the model carries a spec and has a sidecar file: remove one, so only one counts"
                .into(),
        )),
        (Some(text), None) => PlannerSpec::parse(&text)
            .map(|s| (s, None))
            .map_err(|r| bad(format!("metadata `{SPEC_KEY}`"), r)),
        (None, Some(b)) => {
            let text = String::from_utf8_lossy(&b);
            PlannerSpec::parse(&text)
                .map(|s| (s, Some(b.clone())))
                .map_err(|r| bad(sidecar.display().to_string(), r))
        }
        (None, None) => Err(OnnxError::MissingSpec {
            path: shown,
            sidecar: sidecar.display().to_string(),
            key: SPEC_KEY,
        }),
    }
}

/// Refuses the first operator of the default domain tract does not implement.
fn check_operators(shown: &str, graph: &pb::GraphProto) -> Result<()> {
    let known = tract_onnx::onnx().op_register;
    for node in &graph.node {
        if !known.0.contains_key(&node.op_type) {
            let domain = if node.domain.is_empty() {
                String::new()
            } else {
                format!("{}.", node.domain)
            };
            return Err(OnnxError::UnsupportedOperator {
                path: shown.into(),
                op: format!("{domain}{}", node.op_type),
                node: if node.name.is_empty() {
                    node.output.first().cloned().unwrap_or_default()
                } else {
                    node.name.clone()
                },
            });
        }
    }
    Ok(())
}

/// The graph input the observation arrives at: the spec's, or the only one.
fn observation_input<'g>(
    shown: &str,
    graph: &'g pb::GraphProto,
    spec: &PlannerSpec,
) -> Result<&'g pb::ValueInfoProto> {
    let initialisers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initialisers.contains(i.name.as_str()))
        .collect();
    let names = || {
        inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bad = |reason: String| OnnxError::BadSpec {
        path: shown.into(),
        source_of_spec: "observation.input".into(),
        reason,
    };
    let vector = spec.observation.vector_input.as_deref();
    let candidates: Vec<&pb::ValueInfoProto> = inputs
        .iter()
        .copied()
        .filter(|i| Some(i.name.as_str()) != vector)
        .collect();
    match &spec.observation.input {
        Some(name) => inputs
            .iter()
            .find(|i| &i.name == name)
            .copied()
            .ok_or_else(|| {
                bad(format!(
                    "the graph has no input `{name}`; its inputs are [{}]",
                    names()
                ))
            }),
        None if candidates.len() == 1 => Ok(candidates[0]),
        None => Err(bad(format!(
            "the graph has inputs [{}]: name the observation's in observation.input (the \
             others are not fed)",
            names()
        ))),
    }
}

/// The graph input `name` (not an initialiser), or an error naming the spec field.
fn named_input<'g>(
    shown: &str,
    graph: &'g pb::GraphProto,
    name: &str,
    field: &str,
) -> Result<&'g pb::ValueInfoProto> {
    graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .find(|i| i.name == name)
        .ok_or_else(|| OnnxError::BadSpec {
            path: shown.into(),
            source_of_spec: field.into(),
            reason: format!(
                "the graph has no input `{name}`; its inputs are [{}]",
                graph
                    .input
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// `[C, H, W]` of a raster.
fn raster_shape(bev: &BevSpec) -> [usize; 3] {
    bev.shape()
}

/// One dimension of a declared shape: a size, a symbol, or unknown.
fn dims_of(info: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as T;
    let T::TensorType(t) = info.r#type.as_ref()?.value.as_ref()?;
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(v)) => Some(*v),
                _ => None,
            })
            .collect(),
    )
}

fn show_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("batch".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Checks an observation input is `[batch, ..dims]` f32 and returns its batch dimension.
fn check_input_shape(
    shown: &str,
    input: &pb::ValueInfoProto,
    dims_after_batch: &[usize],
    kind: &'static str,
) -> Result<BatchDim> {
    let expected = format!(
        "[batch, {}]",
        dims_after_batch
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mismatch = |found: String| OnnxError::InputShape {
        path: shown.into(),
        input: input.name.clone(),
        kind,
        found,
        expected: expected.clone(),
    };
    use pb::type_proto::Value as T;
    if let Some(T::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        if t.elem_type != pb::tensor_proto::DataType::Float as i32 {
            return Err(mismatch(format!(
                "element type {} (not float32)",
                pb::tensor_proto::DataType::try_from(t.elem_type)
                    .map_or("unknown".into(), |d| d.as_str_name().to_string())
            )));
        }
    }
    let Some(dims) = dims_of(input) else {
        return Err(mismatch("undeclared".into()));
    };
    let want: Vec<Option<i64>> = dims_after_batch.iter().map(|&d| Some(d as i64)).collect();
    if dims.len() != 1 + want.len() || dims[1..] != want[..] {
        return Err(mismatch(show_dims(&dims)));
    }
    Ok(match dims[0] {
        Some(n) if n >= 1 => BatchDim::Fixed(n as usize),
        Some(_) => return Err(mismatch(show_dims(&dims))),
        None => BatchDim::Dynamic,
    })
}

/// Checks the waypoint output is `[batch, H, 2]` or `[batch, 2H]` with `H = horizon`.
fn check_waypoints_shape(
    shown: &str,
    spec: &PlannerSpec,
    fact: &TypedFact,
    horizon: usize,
) -> Result<()> {
    let name = &spec.output.waypoints;
    let dims: Vec<Option<usize>> = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
    let found = format!("{:?}", fact.shape);
    let fix = "the waypoints output must be [batch, H, 2] or [batch, 2H] float32 (x forward, y \
               left, metres)";
    let wrong = || OnnxError::OutputShape {
        path: shown.into(),
        name: name.clone(),
        found: found.clone(),
        expected: format!("[batch, {horizon}, 2] or [batch, {}]", 2 * horizon),
        fix,
    };
    if fact.datum_type != f32::datum_type() {
        return Err(wrong());
    }
    let planned = match dims.as_slice() {
        [_, Some(h), Some(2)] => *h,
        [_, Some(a)] if a % 2 == 0 => a / 2,
        _ => return Err(wrong()),
    };
    if planned != horizon {
        return Err(OnnxError::Horizon {
            path: shown.into(),
            found: planned,
            according: format!("its output `{name}`, {found}"),
            found_dt: spec.output.waypoint_dt,
            expected: horizon,
            expected_dt: spec.output.waypoint_dt,
        });
    }
    Ok(())
}

/// Width of the embedding output, `[batch, E]`.
fn embedding_width(shown: &str, name: &str, fact: &TypedFact) -> Result<usize> {
    match fact
        .shape
        .iter()
        .map(|d| d.to_usize().ok())
        .collect::<Vec<_>>()[..]
    {
        [_, Some(e)] if fact.datum_type == f32::datum_type() && e > 0 => Ok(e),
        _ => Err(OnnxError::OutputShape {
            path: shown.into(),
            name: name.into(),
            found: format!("{:?}", fact.shape),
            expected: "[batch, E] float32".into(),
            fix: "export the embedding flattened to one vector per observation, or leave \
                  output.embedding out of the spec",
        }),
    }
}
