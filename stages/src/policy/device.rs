//! Where the policy runs: `cpu`, `cuda` or `cuda:N`.
//!
//! rustc links with `--as-needed`, which drops `libtorch_cuda.so` from the binary because no
//! symbol of it is referenced directly; without it libtorch never registers its CUDA backend and
//! `Cuda::is_available()` is false even on a GPU. Linking it unconditionally would make the
//! binary fail to start on machines without the CUDA libraries, so it is opened at run time,
//! only when a CUDA device is asked for.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use tch::Device;

use super::{PolicyError, Result};

/// A device named by the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<DeviceSpec> {
        let bad = |message: &str| PolicyError::Device {
            device: s.to_string(),
            message: message.to_string(),
        };
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| bad("expected `cuda:N` with N a device number")),
                None => Err(bad("expected `cpu`, `cuda` or `cuda:N`")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The tch device, after making sure it exists (loading libtorch's CUDA backend if needed).
    pub fn resolve(&self) -> Result<Device> {
        match *self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                load_cuda_backend().map_err(|message| PolicyError::Device {
                    device: self.to_string(),
                    message,
                })?;
                let count = tch::Cuda::device_count() as usize;
                if count == 0 {
                    return Err(PolicyError::Device {
                        device: self.to_string(),
                        message: "libtorch's CUDA backend is loaded but sees no GPU".into(),
                    });
                }
                if n >= count {
                    return Err(PolicyError::Device {
                        device: self.to_string(),
                        message: format!("only {count} CUDA device(s) are visible"),
                    });
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// Every CUDA device libtorch sees (none without a CUDA build or a GPU).
pub fn visible_cuda_devices() -> Vec<DeviceSpec> {
    if load_cuda_backend().is_err() {
        return Vec::new();
    }
    (0..tch::Cuda::device_count().max(0) as usize)
        .map(DeviceSpec::Cuda)
        .collect()
}

/// Opens `libtorch_cuda.so` once, globally, so its static initialisers register the backend.
fn load_cuda_backend() -> std::result::Result<(), String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let mut candidates = vec![std::path::PathBuf::from("libtorch_cuda.so")];
            if let Some(dir) = option_env!("LIBTORCH").map(std::path::PathBuf::from) {
                candidates.push(dir.join("lib").join("libtorch_cuda.so"));
            }
            if let Ok(dir) = std::env::var("LIBTORCH") {
                candidates.push(std::path::PathBuf::from(dir).join("lib").join("libtorch_cuda.so"));
            }
            let mut errors = Vec::new();
            for candidate in candidates {
                match open_global(&candidate) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        // libloading's message is only "dlopen failed"; dlerror's text (e.g.
                        // which CUDA library is missing) is its source.
                        let why = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                        errors.push(format!("{}: {e}{why}", candidate.display()));
                    }
                }
            }
            Err(format!(
                "cannot load libtorch's CUDA backend ({}); is this a CUDA build of libtorch with its CUDA libraries installed?",
                errors.join("; ")
            ))
        })
        .clone()
}

#[allow(unsafe_code)]
fn open_global(path: &std::path::Path) -> std::result::Result<(), libloading::Error> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: libtorch_cuda's initialisers only register CUDA hooks with libtorch_cpu, which is
    // already loaded; the library is never unloaded (forgotten below), so no symbol outlives it.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL)? };
    std::mem::forget(lib);
    Ok(())
}

/// Caps the threads libtorch uses for intra-op parallelism.
pub fn set_threads(threads: usize) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
}

/// A short description of a device for `tandem model info` and logs.
pub fn describe_device(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n} (of {} visible)", tch::Cuda::device_count()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        let e = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains("`tpu`") && e.contains("cuda:N"), "{e}");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }
}
