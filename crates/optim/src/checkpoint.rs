//! Saving and loading optimiser + schedule state: buffers as safetensors, scalars as
//! JSON, each written to a temporary file, synced, then renamed into place.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{CorruptCheckpoint, Error, Result};
use crate::optimizer::{Optimizer, OptimizerConfig, OptimizerState, ParamState};
use crate::schedule::Schedule;

/// File name of the buffers (moments, momentum) inside a checkpoint directory.
pub const TENSORS_FILE: &str = "optimizer.safetensors";
/// File name of the scalars (hyper-parameters, step counts, schedule) inside a
/// checkpoint directory; written last, so its presence means the checkpoint is whole.
pub const STATE_FILE: &str = "optimizer.json";

/// The JSON file's format version.
const FORMAT: u32 = 1;

/// Everything needed to resume optimisation exactly: the optimiser's state and, if the
/// run has one, its schedule.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use tuneforge_optim::{Checkpoint, OptimizerConfig, SgdConfig};
///
/// let w = Var::new(&[1.0f32, 2.0], &Device::Cpu)?;
/// let config = OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::default() });
/// let mut opt = config.build([("w", w.clone())])?;
/// opt.backward_step(&w.as_tensor().sqr()?.sum_all()?)?;
///
/// let dir = tempfile::tempdir()?;
/// Checkpoint::capture(opt.as_ref(), None)?.save(dir.path())?;
///
/// let mut resumed = config.build([("w", w.clone())])?;
/// let schedule = Checkpoint::load(dir.path())?.restore(resumed.as_mut())?;
/// assert!(schedule.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The optimiser's state.
    pub optimizer: OptimizerState,
    /// The schedule's state, if any.
    pub schedule: Option<Schedule>,
}

/// The JSON file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: u32,
    optimizer: OptimizerConfig,
    schedule: Option<Schedule>,
    params: BTreeMap<String, ParamManifest>,
    tensors: TensorFile,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamManifest {
    step: u64,
    buffers: Vec<String>,
}

/// Which tensor file the JSON file was written with.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorFile {
    bytes: u64,
    xxh3: u64,
}

/// The safetensors key of one buffer.
fn key(param: &str, buffer: &str) -> String {
    format!("{param}/{buffer}")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

impl Checkpoint {
    /// Copies the state of `optimizer` and `schedule`.
    pub fn capture(optimizer: &dyn Optimizer, schedule: Option<&Schedule>) -> Result<Self> {
        Ok(Self { optimizer: optimizer.state()?, schedule: schedule.cloned() })
    }

    /// Loads the state into `optimizer` (see [`Optimizer::load_state`]) and returns the
    /// schedule to continue with.
    pub fn restore(&self, optimizer: &mut dyn Optimizer) -> Result<Option<Schedule>> {
        optimizer.load_state(&self.optimizer)?;
        Ok(self.schedule.clone())
    }

    /// The buffers as safetensors bytes and the manifest that describes them.
    fn encode(&self) -> Result<(Vec<u8>, Manifest)> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let mut params = BTreeMap::new();
        for (name, p) in &self.optimizer.params {
            for (buffer, t) in &p.buffers {
                if tensors.insert(key(name, buffer), t.clone()).is_some() {
                    return Err(Error::DuplicateParam { name: key(name, buffer) });
                }
            }
            params.insert(name.clone(), ParamManifest { step: p.step, buffers: p.buffers.keys().cloned().collect() });
        }
        let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None).map_err(|e| {
            Error::Tensors { path: PathBuf::from(TENSORS_FILE), source: candle_core::Error::Msg(e.to_string()) }
        })?;
        let manifest = Manifest {
            format: FORMAT,
            optimizer: self.optimizer.config.clone(),
            schedule: self.schedule.clone(),
            params,
            tensors: TensorFile { bytes: bytes.len() as u64, xxh3: xxhash_rust::xxh3::xxh3_64(&bytes) },
        };
        Ok((bytes, manifest))
    }

    /// Writes [`TENSORS_FILE`] and then [`STATE_FILE`] into `dir` (created if missing).
    /// Each is written to a temporary file, synced and renamed, so a reader never sees
    /// a half-written file; the JSON file records the tensor file's length and hash, so
    /// a crash between the two renames is detected on load.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let (bytes, manifest) = self.encode()?;
        write_atomic(&dir.join(TENSORS_FILE), &bytes)?;
        let state_path = dir.join(STATE_FILE);
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|source| Error::Json { path: state_path.clone(), source })?;
        write_atomic(&state_path, &json)?;
        // Make the renames durable too.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The checkpoint as one byte string (for a database): the manifest's length (8 bytes,
    /// little-endian), the manifest (JSON, as in [`STATE_FILE`]), then the buffers
    /// (safetensors, as in [`TENSORS_FILE`]). [`Checkpoint::from_bytes`] reads it back.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (bytes, manifest) = self.encode()?;
        let json =
            serde_json::to_vec(&manifest).map_err(|source| Error::Json { path: PathBuf::from(STATE_FILE), source })?;
        let mut out = Vec::with_capacity(8 + json.len() + bytes.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&bytes);
        Ok(out)
    }

    /// Reads bytes made by [`Checkpoint::to_bytes`]; `origin` names where they came from in
    /// errors. Checked like [`Checkpoint::load`] (format, length and hash of the buffers).
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let corrupt = |reason| Error::CorruptCheckpoint { path: origin.to_path_buf(), reason };
        let len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .filter(|&n| n <= bytes.len() - 8)
            .ok_or_else(|| corrupt(CorruptCheckpoint::Truncated { len: bytes.len() as u64 }))?;
        let manifest: Manifest = serde_json::from_slice(&bytes[8..8 + len])
            .map_err(|source| Error::Json { path: origin.to_path_buf(), source })?;
        Self::decode(manifest, &bytes[8 + len..], origin, origin)
    }

    /// Reads a checkpoint written by [`save`](Self::save); tensors are on the CPU until
    /// [`restore`](Self::restore) moves them to the parameters' devices.
    pub fn load(dir: &Path) -> Result<Self> {
        let state_path = dir.join(STATE_FILE);
        let json = fs::read(&state_path).map_err(io(&state_path))?;
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|source| Error::Json { path: state_path.clone(), source })?;
        let tensors_path = dir.join(TENSORS_FILE);
        let bytes = fs::read(&tensors_path).map_err(io(&tensors_path))?;
        Self::decode(manifest, &bytes, &state_path, &tensors_path)
    }

    fn decode(manifest: Manifest, bytes: &[u8], state_path: &Path, tensors_path: &Path) -> Result<Self> {
        if manifest.format != FORMAT {
            return Err(Error::CorruptCheckpoint {
                path: state_path.to_path_buf(),
                reason: CorruptCheckpoint::Format { version: manifest.format },
            });
        }
        let found = (bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(bytes));
        let expected = (manifest.tensors.bytes, manifest.tensors.xxh3);
        if found != expected {
            return Err(Error::CorruptCheckpoint {
                path: tensors_path.to_path_buf(),
                reason: CorruptCheckpoint::TensorFileChanged { expected, actual: found },
            });
        }
        let mut tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|source| Error::Tensors { path: tensors_path.to_path_buf(), source })?;

        let mut params = BTreeMap::new();
        for (name, p) in manifest.params {
            let mut buffers = BTreeMap::new();
            for buffer in p.buffers {
                let k = key(&name, &buffer);
                let t = tensors.remove(&k).ok_or_else(|| Error::CorruptCheckpoint {
                    path: tensors_path.to_path_buf(),
                    reason: CorruptCheckpoint::MissingTensor { key: k },
                })?;
                buffers.insert(buffer, t);
            }
            params.insert(name, ParamState { step: p.step, buffers });
        }
        if let Some(k) = tensors.keys().min() {
            return Err(Error::CorruptCheckpoint {
                path: tensors_path.to_path_buf(),
                reason: CorruptCheckpoint::ExtraTensor { key: k.clone() },
            });
        }
        Ok(Self { optimizer: OptimizerState { config: manifest.optimizer, params }, schedule: manifest.schedule })
    }
}

/// A temporary name beside `path`, unique to this process.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))
}
