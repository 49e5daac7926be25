//! safetensors files: named tensors plus string metadata, written atomically so that a crash
//! mid-write never leaves a half-written file where a good one was.

use crate::backend::cpu::CpuStorage;
use crate::{Error, Result, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Tensors with their names, in file order.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Writes `tensors` and `metadata` to `path`: first to a temporary file beside it, synced to
/// disk, then renamed over `path` (and the directory synced). On any error the old file, if
/// there was one, is untouched.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    const OP: &str = "save_safetensors";
    let mut names = std::collections::HashSet::new();
    if let Some((name, _)) = tensors.iter().find(|(name, _)| !names.insert(name.as_str())) {
        return Err(Error::value(
            OP,
            format!("two tensors are named {name:?}; every name in a file must be distinct"),
        ));
    }
    let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, data) = match t.cpu(OP)? {
                CpuStorage::F32(v) => {
                    (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                CpuStorage::F64(v) => {
                    (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                CpuStorage::I64(v) => {
                    (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            };
            Ok((name.clone(), data, dtype, t.dims().to_vec()))
        })
        .collect::<Result<_>>()?;
    let views = bytes
        .iter()
        .map(|(name, data, dtype, dims)| {
            TensorView::new(*dtype, dims.clone(), data)
                .map(|v| (name.as_str(), v))
                .map_err(|e| Error::io(OP, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let serialized =
        safetensors::tensor::serialize(views, None).map_err(|e| Error::io(OP, e.to_string()))?;
    write_atomically(path, &with_metadata(serialized, metadata))
}

/// Puts `metadata` into a serialized file's header, keys in sorted order. The safetensors crate
/// takes metadata as a `HashMap`, whose order changes from run to run; the same checkpoint must
/// give the same bytes. Tensor offsets count from the end of the header, so they stay valid.
fn with_metadata(serialized: Vec<u8>, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    if metadata.is_empty() {
        return serialized;
    }
    let n = u64::from_le_bytes(serialized[..8].try_into().expect("8 bytes")) as usize;
    let (header, data) = serialized[8..].split_at(n);
    let tensors = std::str::from_utf8(header).expect("the crate writes JSON").trim_end();
    let tensors = &tensors[1..tensors.len() - 1]; // inside the outer braces
    let meta = serde_json::to_string(metadata).expect("strings serialize");
    let comma = if tensors.is_empty() { "" } else { "," };
    let mut header = format!("{{\"__metadata__\":{meta}{comma}{tensors}}}").into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    out.extend(data);
    out
}

/// Replaces `path` with `bytes` so that readers see the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    const OP: &str = "write";
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(OP, format!("{} is not a file path", path.display())))?;
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    remove_stale_temporaries(dir, &prefix);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let io = |what: &str, e: std::io::Error| {
        Error::io(OP, format!("cannot save {}: {what} {}: {e}", path.display(), tmp.display()))
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot create", e))?;
        f.write_all(bytes).map_err(|e| io("cannot write", e))?;
        f.sync_all().map_err(|e| io("cannot sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            Error::io(OP, format!("cannot move {} to {}: {e}", tmp.display(), path.display()))
        })?;
        // The rename itself is durable only once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files (`prefix` + a process id) that saves killed before their rename
/// left in `dir`: those whose process is gone (Linux; elsewhere they stay).
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)?.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = cfg!(target_os = "linux")
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists();
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads every tensor of a safetensors file and its metadata. f16 and bf16 tensors are widened
/// to f32. A missing, truncated or corrupt file is an error naming the file.
pub fn load_safetensors(path: &Path) -> Result<(NamedTensors, BTreeMap<String, String>)> {
    const OP: &str = "load_safetensors";
    let bytes = read_bytes(path, OP)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::io(OP, format!("{} is not a valid safetensors file: {e}", path.display()))
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::io(OP, format!("{} has a bad header: {e}", path.display())))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut tensors: Vec<(String, Tensor)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| Ok((name.clone(), tensor_from_view(&name, &view)?)))
        .collect::<Result<_>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tensors, metadata))
}

/// A safetensors file's metadata, read from its header alone (the tensors are not read or
/// checked).
pub fn load_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    Ok(read_safetensors_header(path)?.metadata)
}

/// What a safetensors file's header says: its metadata and each tensor's name and shape.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub metadata: BTreeMap<String, String>,
    pub shapes: Vec<(String, Vec<usize>)>,
}

impl Header {
    /// The largest dimension of any tensor: no size a model's config states can exceed it.
    pub fn largest_dim(&self) -> usize {
        self.shapes.iter().flat_map(|(_, s)| s.iter().copied()).max().unwrap_or(0)
    }

    /// The number of values in all its tensors: no model loaded from it has more parameters.
    pub fn elements(&self) -> usize {
        let numel = |s: &Vec<usize>| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        self.shapes
            .iter()
            .map(|(_, s)| numel(s).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add)
    }

    /// Refuses `sizes` (a config's fields, as (name, value)) that exceed what the file holds:
    /// each must be at least 1 and at most its largest tensor dimension, and a count of layers
    /// at most its number of tensors; the error names `what` (the config), the field, the
    /// value and the bound. Checked before a model of that config is allocated.
    pub fn check_sizes(
        &self,
        what: &str,
        sizes: &[(&str, usize)],
        layers: &[(&str, usize)],
    ) -> Result<()> {
        let (dim, count) = (self.largest_dim(), self.shapes.len());
        let bounds = sizes.iter().map(|&(n, v)| (n, v, dim, "its largest tensor dimension"));
        let bounds =
            bounds.chain(layers.iter().map(|&(n, v)| (n, v, count, "its number of tensors")));
        for (name, value, bound, of) in bounds {
            if value == 0 || value > bound {
                return Err(Error::value(
                    "config",
                    format!("{what}: {name} = {value} does not fit the weights: it must be between 1 and {bound}, {of}"),
                ));
            }
        }
        Ok(())
    }
}

/// [`Header`] of a safetensors file, read without its tensors: its stated length is believed
/// only as far as the file and a bound of 100 MiB go.
pub fn read_safetensors_header(path: &Path) -> Result<Header> {
    const OP: &str = "load_safetensors";
    let bad = |what: String| Error::io(OP, format!("{} {what}", path.display()));
    let mut file = open_regular(path, OP)?;
    let len = file.metadata().map_err(|e| bad(format!("cannot be read: {e}")))?.len();
    let mut n = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut n)
        .map_err(|_| bad("is not a valid safetensors file: shorter than its header".into()))?;
    let n = u64::from_le_bytes(n);
    if n > len.saturating_sub(8) || n > 100 << 20 {
        return Err(bad(format!(
            "is not a valid safetensors file: its header claims {n} bytes of a {len}-byte file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    std::io::Read::read_exact(&mut file, &mut header)
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("has a bad header: {e}")))?;
    let Some(entries) = header.as_object() else {
        return Err(bad("has a bad header: not a JSON object".into()));
    };
    let mut out = Header::default();
    for (name, entry) in entries {
        if name == "__metadata__" {
            if let Some(m) = entry.as_object() {
                out.metadata = m
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
            }
            continue;
        }
        let shape = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|s| {
                s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(format!("has a bad header: tensor {name:?} has no shape")))?;
        out.shapes.push((name.clone(), shape));
    }
    Ok(out)
}

/// Opens `path` for reading if it is a regular file. A folder, a device or a pipe is refused
/// before it is opened: reading `/dev/zero` never ends, and opening a pipe waits for a writer.
pub fn open_regular(path: &Path, op: &str) -> Result<std::fs::File> {
    let cannot = |e: std::io::Error| Error::io(op, format!("cannot read {}: {e}", path.display()));
    let not_a_file = || {
        Error::io(
            op,
            format!("{} is not a regular file (a folder, a device or a pipe)", path.display()),
        )
    };
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(not_a_file());
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    // The path may have been replaced between the two looks.
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(not_a_file());
    }
    Ok(file)
}

/// The whole of a regular file (see [`open_regular`]).
pub fn read_bytes(path: &Path, op: &str) -> Result<Vec<u8>> {
    let mut file = open_regular(path, op)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| Error::io(op, format!("cannot read {}: {e}", path.display())))?;
    Ok(bytes)
}

/// The whole of a regular file as UTF-8 text.
pub fn read_text(path: &Path, op: &str) -> Result<String> {
    String::from_utf8(read_bytes(path, op)?).map_err(|e| {
        Error::io(op, format!("{} is not UTF-8 text: {}", path.display(), e.utf8_error()))
    })
}

fn tensor_from_view(name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let data = view.data();
    let dims = view.shape();
    fn words<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        data.chunks_exact(N).map(|c| c.try_into().expect("chunks_exact yields N bytes"))
    }
    match view.dtype() {
        Dtype::F32 => Tensor::from_vec(words::<4>(data).map(f32::from_le_bytes).collect(), dims),
        Dtype::F64 => Tensor::from_vec(words::<8>(data).map(f64::from_le_bytes).collect(), dims),
        Dtype::I64 => Tensor::from_vec(words::<8>(data).map(i64::from_le_bytes).collect(), dims),
        Dtype::BF16 => Tensor::from_vec(
            words::<2>(data)
                .map(|b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16))
                .collect(),
            dims,
        ),
        Dtype::F16 => Tensor::from_vec(
            words::<2>(data).map(|b| f16_to_f32(u16::from_le_bytes(b))).collect(),
            dims,
        ),
        // Integers and booleans (masks, token ids, PyTorch buffers) as i64; a bool as 0 or 1.
        Dtype::I32 => {
            Tensor::from_vec(words::<4>(data).map(|b| i32::from_le_bytes(b) as i64).collect(), dims)
        }
        Dtype::U32 => {
            Tensor::from_vec(words::<4>(data).map(|b| u32::from_le_bytes(b) as i64).collect(), dims)
        }
        Dtype::I16 => {
            Tensor::from_vec(words::<2>(data).map(|b| i16::from_le_bytes(b) as i64).collect(), dims)
        }
        Dtype::U16 => {
            Tensor::from_vec(words::<2>(data).map(|b| u16::from_le_bytes(b) as i64).collect(), dims)
        }
        Dtype::I8 => Tensor::from_vec(data.iter().map(|&b| b as i8 as i64).collect(), dims),
        Dtype::U8 => Tensor::from_vec(data.iter().map(|&b| b as i64).collect(), dims),
        Dtype::BOOL => Tensor::from_vec(data.iter().map(|&b| i64::from(b != 0)).collect(), dims),
        other => Err(Error::dtype(
            "load_safetensors",
            format!(
                "tensor {name} has dtype {other:?}; f64, f32, f16, bf16, i64, i32, u32, i16, u16, i8, u8 and bool are supported"
            ),
        )),
    }
}

/// IEEE half precision to f32 (no crate needed for one bit-twiddle).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalize.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("ferrograd-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::from_vec(vec![1.5f32, -2.0, 3.25], &[3]).unwrap();
        let b = Tensor::from_vec(vec![7i64, 8], &[2, 1]).unwrap();
        let meta = BTreeMap::from([("step".to_string(), "12".to_string())]);
        save_safetensors(&path, &[("a".into(), a), ("b".into(), b)], &meta).unwrap();
        let (ts, m) = load_safetensors(&path).unwrap();
        assert_eq!(m, meta);
        assert_eq!(ts[0].1.to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
        assert_eq!((ts[1].1.to_vec::<i64>().unwrap(), ts[1].1.dims()), (vec![7, 8], &[2, 1][..]));
        // Truncated: refused with the file named.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        let e = load_safetensors(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.safetensors") && e.contains("not a valid safetensors"), "{e}");
        std::fs::write(&cut, b"garbage").unwrap();
        assert!(load_safetensors(&cut).is_err());
        assert!(load_safetensors(&dir.join("missing"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn integer_and_bool_tensors_load_as_i64() {
        use safetensors::tensor::TensorView;
        let path = std::env::temp_dir().join(format!("ferrograd-io-ints-{}", std::process::id()));
        let u8s = [0u8, 7, 255];
        let bools = [1u8, 0, 1, 1];
        let i8s = [-3i8 as u8, 4];
        let u16s: Vec<u8> = [65535u16, 1].iter().flat_map(|x| x.to_le_bytes()).collect();
        let views = [
            ("bool", TensorView::new(Dtype::BOOL, vec![2, 2], &bools).unwrap()),
            ("i8", TensorView::new(Dtype::I8, vec![2], &i8s).unwrap()),
            ("u16", TensorView::new(Dtype::U16, vec![2], &u16s).unwrap()),
            ("u8", TensorView::new(Dtype::U8, vec![3], &u8s).unwrap()),
        ];
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        let (ts, _) = load_safetensors(&path).unwrap();
        let get = |n: &str| ts.iter().find(|(k, _)| k == n).unwrap().1.to_vec::<i64>().unwrap();
        assert_eq!(get("bool"), [1, 0, 1, 1]);
        assert_eq!(get("i8"), [-3, 4]);
        assert_eq!(get("u16"), [65535, 1]);
        assert_eq!(get("u8"), [0, 7, 255]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn half_precision_widens_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn devices_and_lying_headers_are_refused_and_only_the_header_is_read_for_metadata() {
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let e = load_safetensors(zero).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
            assert!(load_safetensors_metadata(zero).is_err());
        }
        let dir = std::env::temp_dir().join(format!("ferrograd-io-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let meta = BTreeMap::from([("format".to_string(), "x".to_string())]);
        save_safetensors(&path, &[("a".into(), Tensor::zeros(&[4], DType::F32).unwrap())], &meta)
            .unwrap();
        assert_eq!(load_safetensors_metadata(&path).unwrap(), meta);
        // A header that claims 2^40 bytes of a small file.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = load_safetensors_metadata(&path).unwrap_err().to_string();
        assert!(e.contains("claims 1099511627776 bytes"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_save_removes_what_killed_saves_left_and_names_the_path_when_it_fails() {
        let dir = std::env::temp_dir().join(format!("ferrograd-io-tmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ck.safetensors");
        // No process has this id (above Linux's pid_max); the parent of this one lives.
        let dead = dir.join(".ck.safetensors.tmp-4000000000");
        let live = dir.join(format!(".ck.safetensors.tmp-{}", std::os::unix::process::parent_id()));
        std::fs::write(&dead, b"half a save").unwrap();
        std::fs::write(&live, b"a save under way").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        if cfg!(target_os = "linux") {
            assert!(!dead.exists(), "the killed save's file is removed");
        }
        assert!(live.exists(), "a living process's file is left alone");
        let e = write_atomically(&dir.join("no/such/dir/ck"), b"x").unwrap_err().to_string();
        assert!(e.contains("cannot save") && e.contains("no/such/dir/ck"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
