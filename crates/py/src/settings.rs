//! The configuration Python passes is the CLI's ([`deltaplan::config::Config`]): the Python
//! side sends its nested or dotted (`"sim.reward.comfort_penalty"`) dict as JSON, and it is
//! merged over the embedded defaults and checked exactly as a `--config` file is, so unknown
//! keys, derived keys and out-of-range values are refused with the CLI's message, as a
//! [`ConfigError`].

use deltaplan::config::Config;
use pyo3::prelude::*;

use crate::ConfigError;

/// Parses `json` (sections of fields, as in the TOML file) into a validated [`Config`].
pub fn config_from_json(json: &str) -> PyResult<Config> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| ConfigError::new_err(format!("bad configuration: {e}")))?;
    let toml::Value::Table(overrides) = json_to_toml(value, "")? else {
        return Err(ConfigError::new_err(
            "the configuration is a dict of sections and fields",
        ));
    };
    Config::from_overrides(overrides).map_err(|e| ConfigError::new_err(format!("{e:#}")))
}

/// A JSON value as the TOML value the CLI would have read; `key` names it in errors.
fn json_to_toml(value: serde_json::Value, key: &str) -> PyResult<toml::Value> {
    use serde_json::Value as J;
    use toml::Value as T;
    Ok(match value {
        J::Null => {
            return Err(ConfigError::new_err(format!(
                "`{key}` is None: the configuration has no null values (the CLI's TOML has \
                 none); leave the key out for its default"
            )))
        }
        J::Bool(b) => T::Boolean(b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => T::Integer(i),
            (None, Some(x)) if n.is_f64() => T::Float(x),
            _ => {
                return Err(ConfigError::new_err(format!(
                    "`{key}` = {n} does not fit a 64-bit signed integer"
                )))
            }
        },
        J::String(s) => T::String(s),
        J::Array(items) => T::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| json_to_toml(v, &format!("{key}[{i}]")))
                .collect::<PyResult<_>>()?,
        ),
        J::Object(map) => T::Table(
            map.into_iter()
                .map(|(k, v)| {
                    let full = if key.is_empty() {
                        k.clone()
                    } else {
                        format!("{key}.{k}")
                    };
                    Ok((k, json_to_toml(v, &full)?))
                })
                .collect::<PyResult<_>>()?,
        ),
    })
}

/// Every setting with its default, as JSON (what `deltaplan config` prints, as JSON).
#[pyfunction]
pub fn default_settings_json() -> PyResult<String> {
    serde_json::to_string(&Config::default()).map_err(|e| ConfigError::new_err(e.to_string()))
}

/// The pool `num_threads` asks for, as `--threads` does: `None` (rayon's global pool, every
/// core) for 0.
pub fn thread_pool(num_threads: usize) -> PyResult<Option<rayon::ThreadPool>> {
    if num_threads == 0 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .build()
        .map(Some)
        .map_err(|e| ConfigError::new_err(e.to_string()))
}
