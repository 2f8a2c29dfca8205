//! Generic, atomic, validated safetensors + JSON file I/O shared by every artefact deltaplan
//! writes (demonstration datasets, SFT planners, ...).
//!
//! Format: a plain safetensors file (F32 tensors, and U8 ones where a file kind says so: the
//! demonstrations' BEV rasters) whose `__metadata__` holds exactly one
//! entry, `"deltaplan"`, the JSON text of a caller-supplied object with at least `"kind"`
//! (string) and `"schema_version"` (integer). Any safetensors reader (Python included) can open
//! the tensors; the JSON carries configuration and normalisation statistics.
//!
//! Why this shape:
//! - writes go to `<path>.tmp`, are fsynced, then renamed over `<path>`: a crash mid-write never
//!   leaves a half-written file under the real name (rename is atomic on POSIX filesystems);
//! - no file ever holds a non-finite value: [`save_tensors`] refuses one, naming the tensor;
//! - the JSON's last field, `content_sha256`, hashes the tensors and the JSON text before it;
//!   it is checked on load, so one flipped bit anywhere in the payload is a named error;
//! - loads check, in order, existence, parseability, content hash, kind, schema version, and hand back the
//!   tensors for the caller to check names and shapes against its metadata, each failure with
//!   an error that names the file, the problem and the fix ([`crate::LearnError`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use deltaplan_stdx::fs::write_atomic;
use safetensors::{Dtype, SafeTensors};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{LearnError, Result};

/// Key of the deltaplan JSON inside the safetensors `__metadata__` map.
pub const METADATA_KEY: &str = "deltaplan";

/// The metadata JSON's last field: the content hash ([`content_hash`]) of the tensors and of
/// the JSON text without this field.
pub const CONTENT_HASH_KEY: &str = "content_sha256";

/// Tensors as loaded: name -> (shape, row-major data).
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;
/// Byte (U8) tensors as loaded: name -> (shape, row-major data).
pub type ByteTensorMap = BTreeMap<String, (Vec<usize>, Vec<u8>)>;

/// The JSON metadata of a loaded file, read through one typed accessor whose errors name the
/// file, the field and the fix.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    path: String,
    kind: String,
    json: serde_json::Value,
}

impl Metadata {
    /// Field `name` as a `T`; missing or of another type is [`LearnError::Incompatible`].
    pub fn field<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let value = self
            .json
            .get(name)
            .ok_or_else(|| self.incompatible(format!("metadata has no field `{name}`")))?;
        serde_json::from_value(value.clone())
            .map_err(|e| self.incompatible(format!("metadata field `{name}` does not parse: {e}")))
    }

    /// Field `name` if present (None when absent); a present field of another type is an error.
    pub fn optional<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.json.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(_) => self.field(name).map(Some),
        }
    }

    /// The whole JSON object.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    /// An [`LearnError::Incompatible`] for this file with `reason`.
    pub fn incompatible(&self, reason: String) -> LearnError {
        LearnError::Incompatible {
            path: self.path.clone(),
            reason,
            fix: fix_for_kind(&self.kind),
        }
    }
}

/// The fix to suggest for a bad file of `kind`: the command that (re)creates it.
pub fn fix_for_kind(kind: &str) -> String {
    match kind {
        "demonstrations" => {
            "re-run `deltaplan record` with the same --out and configuration, which records it again".to_string()
        }
        "sft_planner" => {
            "re-run `deltaplan train-sft` with the same --out and configuration, which trains it again".to_string()
        }
        "residual_policy" => {
            "re-run `deltaplan refine` with the same --out and configuration, which refines again from the start".to_string()
        }
        _ => "recreate it with this version of deltaplan".to_string(),
    }
}

/// A human description of a file kind, for wrong-kind errors.
pub fn describe_kind(kind: &str) -> String {
    match kind {
        "demonstrations" => "a dataset of expert demonstrations (kind `demonstrations`)".into(),
        "sft_planner" => "an SFT planner checkpoint (kind `sft_planner`)".into(),
        other => format!("a file of kind `{other}`"),
    }
}

fn io_err(op: &'static str, path: &Path, e: std::io::Error) -> LearnError {
    LearnError::Io {
        op,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes `tensors` (name, shape, data) and `metadata` to `path` atomically, with the content
/// hash added to the metadata. A non-finite value in any tensor is refused
/// ([`LearnError::NonFinite`], naming the tensor) before anything is written.
///
/// `metadata` must be a JSON object with a string `"kind"` and an integer `"schema_version"`;
/// every tensor's data length must equal the product of its shape, and names must be unique.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: &serde_json::Value,
) -> Result<()> {
    save_tensors_with_bytes(path, tensors, &[], metadata)
}

/// [`save_tensors`] plus U8 tensors (`byte_tensors`, stored as they are).
pub fn save_tensors_with_bytes(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    byte_tensors: &[(String, Vec<usize>, &[u8])],
    metadata: &serde_json::Value,
) -> Result<()> {
    let at = || format!("the write of {} (nothing was written)", path.display());
    let buf = encode_tensors(tensors, byte_tensors, metadata, at)?;
    write_atomic(path, &buf).map_err(|e| io_err("write atomically", path, e))
}

/// The bytes [`save_tensors_with_bytes`] writes (a safetensors file in memory, e.g. for a
/// message between processes); `at` names where, should a value not be finite.
pub fn encode_tensors(
    tensors: &[(String, Vec<usize>, &[f32])],
    byte_tensors: &[(String, Vec<usize>, &[u8])],
    metadata: &serde_json::Value,
    at: impl Fn() -> String,
) -> Result<Vec<u8>> {
    let obj = metadata.as_object().ok_or_else(|| {
        LearnError::Config("checkpoint metadata must be a JSON object".to_string())
    })?;
    if !obj.get("kind").is_some_and(|k| k.is_string()) {
        return Err(LearnError::Config(
            "checkpoint metadata needs a string field \"kind\"".to_string(),
        ));
    }
    if !obj.get("schema_version").is_some_and(|v| v.is_u64()) {
        return Err(LearnError::Config(
            "checkpoint metadata needs an integer field \"schema_version\"".to_string(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    let sizes = tensors
        .iter()
        .map(|(name, shape, data)| (name, shape, data.len()))
        .chain(byte_tensors.iter().map(|(n, s, d)| (n, s, d.len())));
    for (name, shape, len) in sizes {
        let n: usize = shape.iter().product();
        if n != len {
            return Err(LearnError::Shape {
                name: name.clone(),
                expected: n,
                got: len,
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(LearnError::Config(format!(
                "tensor name `{name}` appears twice"
            )));
        }
    }
    for (name, _, data) in tensors {
        if let Some(what) = non_finite_tensor(name, data) {
            return Err(LearnError::NonFinite { what, at: at() });
        }
    }

    // safetensors stores little-endian bytes; build them explicitly (no endianness assumption).
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| (name, Dtype::F32, shape, b.as_slice()))
        .chain(
            byte_tensors
                .iter()
                .map(|(name, shape, b)| (name, Dtype::U8, shape, *b)),
        )
        .map(|(name, dtype, shape, b)| {
            safetensors::tensor::TensorView::new(dtype, shape.clone(), b).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| LearnError::Checkpoint(format!("cannot build tensor views: {e}")))?;
    let json = serde_json::to_string(metadata)
        .map_err(|e| LearnError::Checkpoint(format!("cannot encode metadata: {e}")))?;
    let hash = content_hash(tensors, byte_tensors, &json);
    // The hash goes last, spliced into the text it covers (`json` is a non-empty object).
    let json = format!(
        "{},\"{CONTENT_HASH_KEY}\":\"{hash}\"}}",
        &json[..json.len() - 1]
    );
    let info = HashMap::from([(METADATA_KEY.to_string(), json)]);
    safetensors::serialize(views, Some(info))
        .map_err(|e| LearnError::Checkpoint(format!("cannot serialise tensors: {e}")))
}

/// Loads a file written by [`save_tensors`], checking that it exists, parses, is of
/// `expected_kind` and has `schema_version`. Returns the metadata and every tensor.
pub fn load_tensors(
    path: &Path,
    expected_kind: &str,
    schema_version: u32,
) -> Result<(Metadata, TensorMap)> {
    let (meta, tensors, bytes) = load_tensors_with_bytes(path, expected_kind, schema_version)?;
    match bytes.keys().next() {
        Some(name) => Err(LearnError::Corrupt {
            path: path.display().to_string(),
            reason: format!("tensor `{name}` has dtype U8; files of this kind hold F32 only"),
            fix: fix_for_kind(expected_kind),
        }),
        None => Ok((meta, tensors)),
    }
}

/// [`load_tensors`] for files that may also hold U8 tensors, returned apart.
pub fn load_tensors_with_bytes(
    path: &Path,
    expected_kind: &str,
    schema_version: u32,
) -> Result<(Metadata, TensorMap, ByteTensorMap)> {
    let shown = path.display().to_string();
    let buf = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fix = fix_for_kind(expected_kind);
            return Err(LearnError::FileMissing { path: shown, fix });
        }
        Err(e) => return Err(io_err("read", path, e)),
    };
    decode_tensors(&buf, &shown, expected_kind, schema_version)
}

/// Reads the bytes of [`encode_tensors`] (or of a file) named `shown` in errors, with every
/// check of [`load_tensors_with_bytes`].
pub fn decode_tensors(
    buf: &[u8],
    shown: &str,
    expected_kind: &str,
    schema_version: u32,
) -> Result<(Metadata, TensorMap, ByteTensorMap)> {
    let shown = shown.to_string();
    let fix = fix_for_kind(expected_kind);
    let corrupt = |reason: String| LearnError::Corrupt {
        path: shown.clone(),
        reason,
        fix: fix.clone(),
    };
    let st = SafeTensors::deserialize(buf)
        .map_err(|e| corrupt(format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(buf)
        .map_err(|e| corrupt(format!("not a valid safetensors file: {e}")))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            corrupt(format!(
                "no `{METADATA_KEY}` metadata entry, so it was not written by deltaplan"
            ))
        })?;
    let meta: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("metadata is not valid JSON: {e}")))?;
    let mut tensors = TensorMap::new();
    let mut byte_tensors = ByteTensorMap::new();
    for (name, view) in st.iter() {
        if view.dtype() == Dtype::U8 {
            byte_tensors.insert(
                name.to_string(),
                (view.shape().to_vec(), view.data().to_vec()),
            );
            continue;
        }
        if view.dtype() != Dtype::F32 {
            return Err(corrupt(format!(
                "tensor `{name}` has dtype {:?}; deltaplan files hold F32 (and U8) only",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(name.to_string(), (view.shape().to_vec(), data));
    }
    let (covered, stored) = split_content_hash(text).ok_or_else(|| {
        corrupt(format!(
            "its metadata does not end with a `{CONTENT_HASH_KEY}` content hash (written by an older deltaplan, or damaged)"
        ))
    })?;
    let views: Vec<(String, Vec<usize>, &[f32])> = tensors
        .iter()
        .map(|(n, (s, d))| (n.clone(), s.clone(), d.as_slice()))
        .collect();
    let byte_views: Vec<(String, Vec<usize>, &[u8])> = byte_tensors
        .iter()
        .map(|(n, (s, d))| (n.clone(), s.clone(), d.as_slice()))
        .collect();
    if content_hash(&views, &byte_views, &covered) != stored {
        return Err(corrupt(
            "its content does not match the hash it was written with (a damaged byte)".into(),
        ));
    }
    drop((views, byte_views));
    for (name, (_, data)) in &tensors {
        if let Some(what) = non_finite_tensor(name, data) {
            return Err(corrupt(format!("it holds a non-finite value: {what}")));
        }
    }
    let kind = meta
        .get("kind")
        .and_then(|k| k.as_str())
        .map(str::to_string)
        .ok_or_else(|| corrupt("metadata has no string \"kind\"".to_string()))?;
    if kind != expected_kind {
        return Err(LearnError::WrongKind {
            path: shown,
            expected: describe_kind(expected_kind),
            found: describe_kind(&kind),
        });
    }
    let found = meta
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| corrupt("metadata has no integer \"schema_version\"".to_string()))?;
    if found != u64::from(schema_version) {
        return Err(LearnError::SchemaVersion {
            path: shown,
            kind: kind.clone(),
            expected: schema_version,
            found,
            fix,
        });
    }
    let meta = Metadata {
        path: shown,
        kind,
        json: meta,
    };
    Ok((meta, tensors, byte_tensors))
}

/// Removes tensor `name` from `tensors` (F32 or U8), checking its shape; errors name the file
/// and the fix.
pub fn take_tensor<T>(
    tensors: &mut BTreeMap<String, (Vec<usize>, Vec<T>)>,
    path: &Path,
    kind: &str,
    name: &str,
    shape: &[usize],
) -> Result<Vec<T>> {
    let (got, data) = tensors
        .remove(name)
        .ok_or_else(|| LearnError::MissingTensor {
            path: path.display().to_string(),
            name: name.to_string(),
            fix: fix_for_kind(kind),
        })?;
    if got != shape {
        return Err(LearnError::TensorShape {
            path: path.display().to_string(),
            name: name.to_string(),
            expected: shape.to_vec(),
            got,
            fix: fix_for_kind(kind),
        });
    }
    Ok(data)
}

/// Splits stored metadata text into the text the hash covers and the hash: the inverse of the
/// splice in [`save_tensors`]. None if the text does not end with the hash field.
fn split_content_hash(text: &str) -> Option<(String, &str)> {
    let marker = format!(",\"{CONTENT_HASH_KEY}\":\"");
    let at = text.rfind(&marker)?;
    let hash = text[at + marker.len()..].strip_suffix("\"}")?;
    let is_hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    is_hex.then(|| (format!("{}}}", &text[..at]), hash))
}

/// `tensor `NAME` (K of N values)` if `data` holds a non-finite value, else None: how every
/// non-finite check of a tensor names what it found.
pub fn non_finite_tensor(name: &str, data: &[f32]) -> Option<String> {
    if all_finite(data) {
        return None;
    }
    let bad = data.iter().filter(|x| !x.is_finite()).count();
    Some(format!("tensor `{name}` ({bad} of {} values)", data.len()))
}

/// Whether every value of `xs` is finite, branch-free so it vectorises (it runs after every
/// optimiser step): `x - x` is 0 for a finite `x` and NaN otherwise, and NaN survives a sum.
#[allow(clippy::eq_op)] // `x - x` is the test itself, not a slip
pub fn all_finite(xs: &[f32]) -> bool {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x - x;
        }
    }
    acc.iter().chain(rest).all(|x| (x - x) == 0.0)
}

/// The first of `tensors` holding a non-finite value, named by [`non_finite_tensor`].
pub fn first_non_finite(tensors: &[crate::nn::TensorView<'_>]) -> Option<String> {
    tensors
        .iter()
        .find_map(|t| non_finite_tensor(&t.name, t.data))
}

/// Hex SHA-256 of a file's content: its tensors in name order ([`sha256_of`]) followed by its
/// metadata text exactly as stored. Independent of the file's byte layout.
pub fn content_hash(
    tensors: &[(String, Vec<usize>, &[f32])],
    byte_tensors: &[(String, Vec<usize>, &[u8])],
    metadata_text: &str,
) -> String {
    let mut sorted: Vec<&(String, Vec<usize>, &[f32])> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update(sha256_of_refs(&sorted).as_bytes());
    let mut bytes: Vec<&(String, Vec<usize>, &[u8])> = byte_tensors.iter().collect();
    bytes.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, shape, data) in bytes {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.update(metadata_text.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 over tensor names, shapes and little-endian data, in the order given. Identifies
/// a set of weights (e.g. the frozen SFT planner a residual policy was trained on top of)
/// independently of file layout and metadata.
pub fn sha256_of(tensors: &[(String, Vec<usize>, &[f32])]) -> String {
    sha256_of_refs(&tensors.iter().collect::<Vec<_>>())
}

fn sha256_of_refs(tensors: &[&(String, Vec<usize>, &[f32])]) -> String {
    let mut h = Sha256::new();
    for (name, shape, data) in tensors.iter().copied() {
        // Length prefixes keep ("ab", [..]) and ("a", "b"..) apart.
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        for x in data.iter() {
            h.update(x.to_le_bytes());
        }
    }
    hex(&h.finalize())
}
