//! ONNX out: the built-in SFT planner as an ONNX graph, and the refined planner (frozen planner
//! plus the residual's deterministic mean, tanh bound and ramp included) as ONE graph with the
//! frozen planner's inputs, so it drops in where the frozen planner was deployed. (A raster
//! planner without a vector input is the one exception: the residual reads the vector
//! observation, so its refined graph has a second input `obs` `[batch, 142]`.)
//!
//! The protobuf is written with the message types tract-onnx already carries (`tract_onnx::pb`,
//! prost-generated from onnx.proto): no second ONNX crate, no `protoc` at build time, and what
//! deltaplan writes is read back by the same definitions tract parses with.
//!
//! The refined graph computes exactly what `ResidualPlanner::plan` computes:
//! `W + ramp * max_delta * tanh(actor([z, W / WAYPOINT_SCALE, (obs - mean) / std]))`, with
//! `W`, `z` the frozen planner's outputs. The frozen graph is embedded unchanged apart from
//! its waypoint tensor's name (the refined output takes that name, so callers see the same
//! interface); every name the residual adds starts with `deltaplan/`.

use deltaplan_learn::actor_critic::ActorCritic;
use deltaplan_learn::nn::Mlp;
use deltaplan_learn::refine::WAYPOINT_SCALE;
use deltaplan_learn::sft::{SftPlanner, OBS_CLIP};
use deltaplan_sim::OBS_DIM;
use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

use crate::error::{OnnxError, Result};
use crate::planner::{decode_model, OnnxPlanner};
use crate::spec::{
    Normalisation, ObservationKind, ObservationSpec, OutputSpec, PlannerSpec, SPEC_KEY,
    SPEC_VERSION,
};

/// Operator set of the graphs deltaplan writes (Clip with min/max inputs needs 11+; tract is
/// tested on 9-18).
pub const OPSET: i64 = 17;
/// ONNX IR version matching [`OPSET`].
pub const IR_VERSION: i64 = 8;
/// Input and output names of the exported built-in planner.
pub const OBS_INPUT: &str = "obs";
pub const WAYPOINTS_OUTPUT: &str = "waypoints";
pub const EMBEDDING_OUTPUT: &str = "z";

/// The frozen planner a refined export starts from.
pub enum Frozen<'a> {
    /// The built-in SFT planner (exported first, then extended).
    Sft(&'a SftPlanner),
    /// An ONNX planner, embedded as it was loaded.
    Onnx(&'a OnnxPlanner),
}

/// The residual that refines a frozen planner: its actor and the ramp it was saved at.
pub struct Residual<'a> {
    pub ac: &'a ActorCritic,
    pub ramp: f32,
}

/// The built-in SFT planner as ONNX bytes: input `obs` `[batch, D]`, outputs `waypoints`
/// `[batch, H, 2]` and `z` `[batch, Z]`, its spec (with the observation statistics the
/// residual normalises with) in the metadata.
pub fn export_sft(sft: &SftPlanner) -> Result<Vec<u8>> {
    let (model, _) = sft_model(sft)?;
    Ok(model.encode_to_vec())
}

/// The refined planner as ONNX bytes: the frozen planner plus `residual`, one graph with the
/// frozen planner's inputs and its waypoint output's name; the spec keeps the frozen planner's
/// observation and normalisation (no embedding output).
pub fn export_refined(frozen: Frozen<'_>, residual: Residual<'_>) -> Result<Vec<u8>> {
    let (model, spec) = match frozen {
        Frozen::Sft(sft) => sft_model(sft)?,
        Frozen::Onnx(p) => (decode_model(p.path(), p.bytes())?, p.spec().clone()),
    };
    Ok(refined_model(model, &spec, residual)?.encode_to_vec())
}

/// Builds the SFT graph and its spec.
fn sft_model(sft: &SftPlanner) -> Result<(pb::ModelProto, PlannerSpec)> {
    let (d, h) = (sft.obs_dim(), sft.horizon());
    let mut g = Graph::new("deltaplan/sft/");
    let mean = g.constant("obs_mean", &[d], sft.obs_mean());
    let inv_std: Vec<f32> = sft.obs_std().iter().map(|s| 1.0 / s).collect();
    let inv_std = g.constant("obs_inv_std", &[d], &inv_std);
    let centred = g.node("Sub", &[OBS_INPUT, &mean], vec![]);
    let scaled = g.node("Mul", &[&centred, &inv_std], vec![]);
    let lo = g.constant("clip_lo", &[], &[-OBS_CLIP]);
    let hi = g.constant("clip_hi", &[], &[OBS_CLIP]);
    let clipped = g.node("Clip", &[&scaled, &lo, &hi], vec![]);
    let pre = g.mlp("encoder", sft.encoder(), &clipped);
    g.node_named("Tanh", &[&pre], EMBEDDING_OUTPUT);
    let head = g.mlp("head", sft.head(), EMBEDDING_OUTPUT);
    let act_scale = g.constant("act_scale", &[2 * h], sft.act_scale());
    let act_mean = g.constant("act_mean", &[2 * h], sft.act_mean());
    let scaled_out = g.node("Mul", &[&head, &act_scale], vec![]);
    let flat = g.node("Add", &[&scaled_out, &act_mean], vec![]);
    let shape = g.constant_i64("waypoint_shape", &[-1, h as i64, 2]);
    g.node_named("Reshape", &[&flat, &shape], WAYPOINTS_OUTPUT);
    let spec = PlannerSpec {
        version: SPEC_VERSION,
        observation: ObservationSpec {
            kind: ObservationKind::Vector,
            input: Some(OBS_INPUT.into()),
            bev: None,
            vector_input: None,
        },
        output: OutputSpec {
            waypoints: WAYPOINTS_OUTPUT.into(),
            horizon: h,
            waypoint_dt: sft.arch().waypoint_dt,
            embedding: Some(EMBEDDING_OUTPUT.into()),
        },
        normalisation: Some(Normalisation {
            obs_mean: sft.obs_mean().to_vec(),
            obs_std: sft.obs_std().to_vec(),
        }),
    };
    let graph = pb::GraphProto {
        name: "deltaplan_sft_planner".into(),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![tensor_info(OBS_INPUT, &[None, Some(d)])],
        output: vec![
            tensor_info(WAYPOINTS_OUTPUT, &[None, Some(h), Some(2)]),
            tensor_info(EMBEDDING_OUTPUT, &[None, Some(sft.z_dim())]),
        ],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "deltaplan".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "deltaplan's behaviour-cloned planner: obs -> waypoints [batch, H, 2] (ego \
                     frame, metres), z [batch, Z]"
            .into(),
        graph: Some(graph),
        metadata_props: vec![spec_entry(&spec)],
        ..Default::default()
    };
    Ok((model, spec))
}

/// Appends the residual to a frozen planner's graph (see the module docs).
fn refined_model(
    mut model: pb::ModelProto,
    spec: &PlannerSpec,
    residual: Residual<'_>,
) -> Result<pb::ModelProto> {
    let h = spec.output.horizon;
    let a = 2 * h;
    let ac = residual.ac;
    if ac.act_dim() != a {
        return Err(OnnxError::Export(format!(
            "the residual corrects {} coordinates, the frozen planner plans {a}",
            ac.act_dim()
        )));
    }
    let norm = spec.normalisation.clone();
    let mut graph = model
        .graph
        .take()
        .ok_or_else(|| OnnxError::Export("the frozen planner's model has no graph".into()))?;
    // The residual reads the vector observation: a vector planner's input, a raster planner's
    // vector input, or (a raster planner without one) a new input `obs` of the refined graph.
    let obs_input = match (spec.observation.kind, &spec.observation.vector_input) {
        (ObservationKind::Bev, Some(name)) => name.clone(),
        (ObservationKind::Bev, None) => {
            let batch = graph.input.first().and_then(out_info_batch);
            graph
                .input
                .push(tensor_info_dims(OBS_INPUT, vec![batch, Some(OBS_DIM)]));
            OBS_INPUT.to_string()
        }
        (ObservationKind::Vector, _) => match &spec.observation.input {
            Some(name) => name.clone(),
            None => graph
                .input
                .iter()
                .find(|i| !graph.initializer.iter().any(|t| t.name == i.name))
                .map(|i| i.name.clone())
                .ok_or_else(|| OnnxError::Export("the frozen graph has no input".into()))?,
        },
    };
    // The frozen waypoints get an internal name; the refined ones take the public name.
    let out_name = spec.output.waypoints.clone();
    let frozen_wp = "deltaplan/frozen_waypoints".to_string();
    for node in &mut graph.node {
        for name in node.input.iter_mut().chain(node.output.iter_mut()) {
            if *name == out_name {
                *name = frozen_wp.clone();
            }
        }
    }
    for info in &mut graph.value_info {
        if info.name == out_name {
            info.name = frozen_wp.clone();
        }
    }
    let out_info = graph
        .output
        .iter()
        .find(|o| o.name == out_name)
        .cloned()
        .ok_or_else(|| OnnxError::Export(format!("the frozen graph has no output `{out_name}`")))?;

    let mut g = Graph::new("deltaplan/residual/");
    let flat_wp = g.node("Flatten", &[&frozen_wp], vec![int_attr("axis", 1)]);
    let scale: Vec<f32> = (0..a).map(|k| WAYPOINT_SCALE[k % 2]).collect();
    let scale = g.constant("waypoint_scale", &[a], &scale);
    let wp_scaled = g.node("Div", &[&flat_wp, &scale], vec![]);
    let (mean, std) = match norm {
        Some(n) => (n.obs_mean, n.obs_std),
        None => (vec![0.0; OBS_DIM], vec![1.0; OBS_DIM]),
    };
    let d = mean.len();
    if ac.obs_dim() < a + d || (spec.output.embedding.is_none() && ac.obs_dim() != a + d) {
        return Err(OnnxError::Export(format!(
            "the residual reads {} inputs, which is not [embedding, {a} plan floats, {d} \
             observation floats] of this frozen planner",
            ac.obs_dim()
        )));
    }
    let mean = g.constant("obs_mean", &[d], &mean);
    let std = g.constant("obs_std", &[d], &std);
    let centred = g.node("Sub", &[&obs_input, &mean], vec![]);
    let obs_norm = g.node("Div", &[&centred, &std], vec![]);
    let mut parts: Vec<String> = Vec::new();
    if let Some(z) = &spec.output.embedding {
        parts.push(g.node("Flatten", &[z], vec![int_attr("axis", 1)]));
    }
    parts.push(wp_scaled);
    parts.push(obs_norm);
    let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let x = g.node("Concat", &part_refs, vec![int_attr("axis", 1)]);
    let mu = g.mlp("actor", &ac.actor, &x);
    let squashed = g.node("Tanh", &[&mu], vec![]);
    let max_delta = g.constant("max_delta", &[a], &ac.max_delta);
    let delta = g.node("Mul", &[&squashed, &max_delta], vec![]);
    let ramp = g.constant("ramp", &[], &[residual.ramp]);
    let ramped = g.node("Mul", &[&delta, &ramp], vec![]);
    let refined = g.node("Add", &[&flat_wp, &ramped], vec![]);
    let shape = g.constant_i64("waypoint_shape", &[-1, h as i64, 2]);
    g.node_named("Reshape", &[&refined, &shape], &out_name);

    graph.node.extend(g.nodes);
    graph.initializer.extend(g.initializers);
    let batch = out_info_batch(&out_info);
    graph.output = vec![tensor_info_dims(&out_name, vec![batch, Some(h), Some(2)])];
    graph.name = format!("deltaplan_refined_{}", graph.name);
    let refined_spec = PlannerSpec {
        version: SPEC_VERSION,
        observation: ObservationSpec {
            vector_input: (spec.observation.kind == ObservationKind::Bev).then_some(obs_input),
            ..spec.observation.clone()
        },
        output: OutputSpec {
            embedding: None,
            ..spec.output.clone()
        },
        normalisation: spec.normalisation.clone(),
    };
    model.graph = Some(graph);
    model.metadata_props.retain(|p| p.key != SPEC_KEY);
    model.metadata_props.push(spec_entry(&refined_spec));
    model.producer_name = "deltaplan".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    model.doc_string = "deltaplan refined planner: frozen planner + bounded residual \
                        (ramp * max_delta * tanh(actor mean))"
        .into();
    Ok(model)
}

/// The batch dimension of an output's declared type (symbolic when unknown).
fn out_info_batch(info: &pb::ValueInfoProto) -> Option<usize> {
    use pb::tensor_shape_proto::dimension::Value;
    let pb::type_proto::Value::TensorType(t) = info.r#type.as_ref()?.value.as_ref()?;
    match t.shape.as_ref()?.dim.first()?.value.as_ref()? {
        Value::DimValue(v) if *v > 0 => Some(*v as usize),
        _ => None,
    }
}

fn spec_entry(spec: &PlannerSpec) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto {
        key: SPEC_KEY.into(),
        value: spec.to_toml(),
    }
}

fn int_attr(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn tensor_info(name: &str, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    tensor_info_dims(name, dims.to_vec())
}

/// A float32 tensor's declared type; `None` dimensions are the symbol `batch`.
fn tensor_info_dims(name: &str, dims: Vec<Option<usize>>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .into_iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(n) => Value::DimValue(n as i64),
                None => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Nodes and initialisers under construction, every name prefixed.
struct Graph {
    prefix: &'static str,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    counter: usize,
}

impl Graph {
    fn new(prefix: &'static str) -> Self {
        Graph {
            prefix,
            nodes: Vec::new(),
            initializers: Vec::new(),
            counter: 0,
        }
    }

    /// A float32 initialiser; returns its name.
    fn constant(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let name = format!("{}{name}", self.prefix);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// An int64 vector initialiser; returns its name.
    fn constant_i64(&mut self, name: &str, data: &[i64]) -> String {
        let name = format!("{}{name}", self.prefix);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A node with a generated output name; returns it.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        self.counter += 1;
        let out = format!("{}{}_{}", self.prefix, op.to_lowercase(), self.counter);
        self.push(op, inputs, &out, attrs);
        out
    }

    /// A node whose output has the given (public) name.
    fn node_named(&mut self, op: &str, inputs: &[&str], output: &str) {
        self.push(op, inputs, output, vec![]);
    }

    fn push(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) {
        self.nodes.push(pb::NodeProto {
            name: format!("{}node_{}", self.prefix, self.nodes.len()),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        });
    }

    /// An [`Mlp`]: `Gemm` (weights `[out, in]`, `transB = 1`) with `Tanh` after every hidden
    /// layer; returns the (linear) output's name.
    fn mlp(&mut self, name: &str, mlp: &Mlp, input: &str) -> String {
        let tensors = mlp.named_tensors();
        let layers = tensors.len() / 2;
        let mut x = input.to_string();
        for (l, pair) in tensors.chunks_exact(2).enumerate() {
            let (w, b) = (&pair[0], &pair[1]);
            let w_name = self.constant(&format!("{name}.{}", w.name), &w.shape, w.data);
            let b_name = self.constant(&format!("{name}.{}", b.name), &b.shape, b.data);
            x = self.node("Gemm", &[&x, &w_name, &b_name], vec![int_attr("transB", 1)]);
            if l + 1 < layers {
                x = self.node("Tanh", &[&x], vec![]);
            }
        }
        x
    }
}
