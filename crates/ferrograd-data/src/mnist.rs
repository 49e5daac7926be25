//! MNIST from its IDX files, raw or gzipped: (N, 1, rows, cols) f32 images, (N,) i64 labels.
//!
//! The workloads use the 10,000 test images (`t10k-*`, see DATA.md): the first 8,000 to train,
//! the last 2,000 to evaluate (`load(dir)?.split(8000)?`).

use ferrograd::{Error, Result, Tensor};
use flate2::read::MultiGzDecoder;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// IDX magic numbers: two zero bytes, 0x08 (unsigned bytes), then the number of dimensions.
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images and their labels, in the files' order.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// (N, 1, rows, cols) f32 in [0, 1] (28 × 28 for MNIST).
    pub images: Tensor,
    /// (N,) i64 digits 0–9.
    pub labels: Tensor,
}

impl Mnist {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.dims().first().copied().unwrap_or(0)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n_train` examples and the rest, e.g. `split(8000)` of the 10,000 test images
    /// gives the workloads' 8,000 to train on and 2,000 to evaluate on.
    ///
    /// ```
    /// use ferrograd::{DType, Tensor};
    /// let data = ferrograd_data::mnist::Mnist {
    ///     images: Tensor::zeros(&[10, 1, 28, 28], DType::F32).unwrap(),
    ///     labels: Tensor::zeros(&[10], DType::I64).unwrap(),
    /// };
    /// let (train, test) = data.split(8).unwrap();
    /// assert_eq!((train.len(), test.images.dims()), (8, &[2, 1, 28, 28][..]));
    /// assert!(data.split(11).is_err());
    /// ```
    pub fn split(&self, n_train: usize) -> Result<(Mnist, Mnist)> {
        let n = self.len();
        if n_train > n {
            return Err(Error::value(
                "mnist split",
                format!("cannot take {n_train} training examples from {n}"),
            ));
        }
        let part = |start, len| -> Result<Mnist> {
            Ok(Mnist {
                images: self.images.narrow(0, start, len)?,
                labels: self.labels.narrow(0, start, len)?,
            })
        };
        Ok((part(0, n_train)?, part(n_train, n - n_train)?))
    }
}

/// An IDX image file (magic 0x00000803): (N, 1, rows, cols) f32, each byte divided by 255.
/// Gzipped files are recognized by their first bytes (1f 8b), whatever their name.
///
/// ```
/// # let path = std::env::temp_dir().join(format!("ferrograd-doc-images-{}", std::process::id()));
/// // magic, 2 images, 1 row, 2 columns, then the pixels row by row
/// let bytes = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 255, 51, 102];
/// std::fs::write(&path, bytes).unwrap();
/// let images = ferrograd_data::mnist::read_images(&path).unwrap();
/// assert_eq!(images.dims(), &[2, 1, 1, 2]);
/// assert_eq!(images.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 0.2, 0.4]);
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_images(path: &Path) -> Result<Tensor> {
    let (dims, bytes) = read_idx(path, IMAGES_MAGIC, "image")?;
    let pixels = bytes.iter().map(|&b| f32::from(b) / 255.0).collect();
    Tensor::from_vec(pixels, &[dims[0], 1, dims[1], dims[2]]) // (N, 1, rows, cols)
}

/// An IDX label file (magic 0x00000801) of digits 0–9: (N,) i64. Gzip as for `read_images`.
///
/// ```
/// # let path = std::env::temp_dir().join(format!("ferrograd-doc-labels-{}", std::process::id()));
/// std::fs::write(&path, [0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]).unwrap();
/// let labels = ferrograd_data::mnist::read_labels(&path).unwrap();
/// assert_eq!(labels.to_vec::<i64>().unwrap(), vec![7, 2, 1]);
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_labels(path: &Path) -> Result<Tensor> {
    let (dims, bytes) = read_idx(path, LABELS_MAGIC, "label")?;
    if let Some(i) = bytes.iter().position(|&b| b > 9) {
        return Err(fail(path, format!("label {} at index {i} is not a digit 0–9", bytes[i])));
    }
    Tensor::from_vec(bytes.iter().map(|&b| i64::from(b)).collect(), &[dims[0]])
}

/// The MNIST files in `dir`: the test set (`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`,
/// each raw or with `.gz`) when its images are there, else the training set (`train-*`).
///
/// ```no_run
/// use std::path::Path;
/// let data = ferrograd_data::mnist::load(Path::new("../shared/data/mnist")).unwrap();
/// let (train, test) = data.split(8000).unwrap(); // 8,000 to train on, 2,000 to evaluate on
/// ```
pub fn load(dir: &Path) -> Result<Mnist> {
    for prefix in ["t10k", "train"] {
        if find(dir, &format!("{prefix}-images-idx3-ubyte")).is_some() {
            return load_set(dir, prefix);
        }
    }
    let missing = if dir.is_dir() { "" } else { " (the directory does not exist)" };
    Err(fail(
        dir,
        format!(
            "found neither t10k-images-idx3-ubyte(.gz) nor train-images-idx3-ubyte(.gz){missing}"
        ),
    ))
}

/// The files `{prefix}-images-idx3-ubyte` and `{prefix}-labels-idx1-ubyte` (each raw or with
/// `.gz`) in `dir`, e.g. prefix `"train"` or `"t10k"`; their counts must agree.
pub fn load_set(dir: &Path, prefix: &str) -> Result<Mnist> {
    let path = |name: String| {
        find(dir, &name).ok_or_else(|| {
            fail(&dir.join(&name), format!("not found (nor {name}.gz in {})", dir.display()))
        })
    };
    let (images_path, labels_path) = (
        path(format!("{prefix}-images-idx3-ubyte"))?,
        path(format!("{prefix}-labels-idx1-ubyte"))?,
    );
    let (images, labels) = (read_images(&images_path)?, read_labels(&labels_path)?);
    if images.dims()[0] != labels.dims()[0] {
        return Err(fail(
            &images_path,
            format!(
                "has {} images but {} has {} labels; expected one label per image",
                images.dims()[0],
                labels_path.display(),
                labels.dims()[0]
            ),
        ));
    }
    Ok(Mnist { images, labels })
}

/// `dir/name`, or else `dir/name.gz`, whichever is a file.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

fn fail(path: &Path, message: impl Display) -> Error {
    Error::io("mnist", format!("{}: {message}", path.display()))
}

/// The sizes and data of an IDX file of unsigned bytes whose magic must be `magic`; the data's
/// length must be exactly the product of the sizes.
fn read_idx(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = ferrograd::io::open_regular(path, "mnist")?;
    let mut file = BufReader::new(file);
    let head = file.fill_buf().map_err(|e| fail(path, format!("cannot read: {e}")))?;
    let gzip = head.starts_with(&GZIP_MAGIC);
    let mut reader: Box<dyn Read> =
        if gzip { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut read_at_most = |n: u64| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut reader).take(n).read_to_end(&mut out).map_err(|e| match gzip {
            true => fail(path, format!("cannot decompress (corrupt or truncated gzip?): {e}")),
            false => fail(path, format!("cannot read: {e}")),
        })?;
        Ok(out)
    };
    let rank = (magic & 0xff) as usize;
    let header = read_at_most(4 + 4 * rank as u64)?;
    let word = |i: usize| {
        header.get(4 * i..4 * i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| {
        fail(
            path,
            format!(
                "truncated: the file has {} bytes, an IDX header needs at least 4",
                header.len()
            ),
        )
    })?;
    if found & !0xff == magic & !0xff && found != magic {
        return Err(fail(
            path,
            format!(
                "IDX data of rank {} (magic 0x{found:08x}); {what} files have rank {rank} \
                 (magic 0x{magic:08x})",
                found & 0xff
            ),
        ));
    }
    if found != magic {
        return Err(fail(
            path,
            format!(
                "magic number 0x{found:08x} is not that of an IDX {what} file \
                 (expected 0x{magic:08x})"
            ),
        ));
    }
    let dims = (1..=rank).map(|i| word(i).map(|d| d as usize)).collect::<Option<Vec<_>>>();
    let dims = dims.ok_or_else(|| {
        fail(
            path,
            format!(
                "truncated: the header has {} bytes, an IDX {what} header needs {}",
                header.len(),
                4 + 4 * rank
            ),
        )
    })?;
    let sizes = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" × ");
    let expected = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let expected = expected.ok_or_else(|| fail(path, format!("sizes {sizes} are too large")))?;
    let data = read_at_most((expected as u64).saturating_add(1))?;
    if data.len() != expected {
        let found = match data.len() > expected {
            true => "more (trailing data)".to_string(),
            false => format!("{} (truncated)", data.len()),
        };
        return Err(fail(
            path,
            format!("sizes {sizes} need {expected} bytes after the header, found {found}"),
        ));
    }
    Ok((dims, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrograd::{ErrorKind, Rng};
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty directory of its own under the system's temporary directory.
    fn temp_dir() -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ferrograd-data-mnist-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out.extend(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Three 2 × 3 images and their labels.
    fn small() -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..18).map(|i| (i * 15) as u8).collect();
        (idx(IMAGES_MAGIC, &[3, 2, 3], &pixels), idx(LABELS_MAGIC, &[3], &[7, 0, 9]))
    }

    #[test]
    fn reads_raw_and_gzipped_files_alike() {
        let (images, labels) = small();
        for (name, compress) in [("raw", false), ("gz", true)] {
            let dir = temp_dir();
            let pack = |b: &[u8]| if compress { gzip(b) } else { b.to_vec() };
            // the name does not say gzip: the first bytes do
            std::fs::write(dir.join("t10k-images-idx3-ubyte"), pack(&images)).unwrap();
            std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), pack(&labels)).unwrap();
            let data = load(&dir).unwrap();
            assert_eq!(data.images.dims(), &[3, 1, 2, 3], "{name}");
            let pixels = data.images.to_vec::<f32>().unwrap();
            let want: Vec<f32> = (0..18).map(|i| (i * 15) as f32 / 255.0).collect();
            assert_eq!(pixels, want, "{name}");
            assert_eq!(data.labels.to_vec::<i64>().unwrap(), vec![7, 0, 9], "{name}");

            let (train, test) = data.split(2).unwrap();
            assert_eq!((train.len(), test.len()), (2, 1));
            assert_eq!(test.labels.to_vec::<i64>().unwrap(), vec![9]);
            assert_eq!(test.images.to_vec::<f32>().unwrap(), want[12..].to_vec());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn load_takes_the_test_set_first_then_the_training_set() {
        let dir = temp_dir();
        let (images, labels) = small();
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), &labels).unwrap();
        assert_eq!(load(&dir).unwrap().len(), 3);
        let one = idx(IMAGES_MAGIC, &[1, 2, 3], &[0; 6]);
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), one).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(LABELS_MAGIC, &[1], &[4])).unwrap();
        assert_eq!(load(&dir).unwrap().len(), 1);
        assert_eq!(load_set(&dir, "train").unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes `bytes` as an image (or label) file and returns the error reading it gives.
    fn error_of(bytes: &[u8], labels: bool) -> Error {
        let dir = temp_dir();
        let path = dir.join("digits.idx");
        std::fs::write(&path, bytes).unwrap();
        let result = if labels { read_labels(&path) } else { read_images(&path) };
        std::fs::remove_dir_all(&dir).unwrap();
        result.unwrap_err()
    }

    #[test]
    fn each_corruption_is_refused_with_its_own_message() {
        let (images, labels) = small();
        let cases: Vec<(Vec<u8>, bool, &str)> = vec![
            (
                labels.clone(),
                false,
                "IDX data of rank 1 (magic 0x00000801); image files have rank 3",
            ),
            (
                images.clone(),
                true,
                "IDX data of rank 3 (magic 0x00000803); label files have rank 1",
            ),
            (idx(0x0802, &[3, 6], &[0; 18]), false, "IDX data of rank 2"),
            (
                idx(0x0d03, &[3, 2, 3], &[0; 18]),
                false,
                "magic number 0x00000d03 is not that of an IDX image",
            ),
            (
                b"\x89PNG\r\n\x1a\n".to_vec(),
                true,
                "magic number 0x89504e47 is not that of an IDX label",
            ),
            (vec![], false, "truncated: the file has 0 bytes"),
            (images[..10].to_vec(), false, "truncated: the header has 10 bytes"),
            (
                images[..30].to_vec(),
                false,
                "sizes 3 × 2 × 3 need 18 bytes after the header, found 14",
            ),
            ([&images[..], &[0]].concat(), false, "found more (trailing data)"),
            (gzip(&images)[..20].to_vec(), false, "cannot decompress"),
            (idx(LABELS_MAGIC, &[3], &[1, 10, 2]), true, "label 10 at index 1 is not a digit"),
            (idx(IMAGES_MAGIC, &[u32::MAX; 3], &[]), false, "too large"),
            // (6700417·257) · (65537·641) · 255 = 2⁶⁴ − 1 bytes: fits usize, not one byte more
            (
                idx(IMAGES_MAGIC, &[1722007169, 42009217, 255], &[0; 4]),
                false,
                "found 4 (truncated)",
            ),
        ];
        for (bytes, labels, want) in cases {
            let e = error_of(&bytes, labels);
            assert_eq!(e.kind, ErrorKind::Io, "{e}");
            assert!(e.to_string().contains(want), "expected '{want}' in: {e}");
            assert!(e.to_string().contains("digits.idx: "), "names the file: {e}");
        }
    }

    #[test]
    fn missing_or_mismatched_files_are_refused() {
        let dir = temp_dir();
        let e = read_images(&dir.join("nothing-here")).unwrap_err();
        assert!(e.to_string().contains("cannot read") && e.to_string().contains("nothing-here"));
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("found neither t10k-images-idx3-ubyte(.gz)"), "{e}");
        assert!(load(&dir.join("absent")).unwrap_err().to_string().contains("does not exist"));

        let (images, _) = small();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), &images).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(
            e.contains("t10k-labels-idx1-ubyte: not found (nor t10k-labels-idx1-ubyte.gz"),
            "{e}"
        );
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(LABELS_MAGIC, &[2], &[1, 2]))
            .unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("has 3 images but") && e.contains("has 2 labels"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_bytes_make_it_panic() {
        let (images, labels) = small();
        let mut rng = Rng::seed(3);
        let dir = temp_dir();
        let path = dir.join("file");
        for trial in 0..400 {
            let mut bytes = if trial % 2 == 0 { images.clone() } else { labels.clone() };
            if trial % 4 < 2 {
                bytes = gzip(&bytes);
            }
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[i] = rng.below(256) as u8,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, rng.below(256) as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let _ = (read_images(&path), read_labels(&path)); // Ok or Err, never a panic
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_the_real_test_set_when_present() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/mnist"));
        if !dir.is_dir() {
            eprintln!("skipped: no MNIST at {} (see DATA.md)", dir.display());
            return;
        }
        let data = load(dir).unwrap();
        assert_eq!(data.images.dims(), &[10_000, 1, 28, 28]);
        assert_eq!(data.labels.dims(), &[10_000]);
        let labels = data.labels.to_vec::<i64>().unwrap();
        assert_eq!(labels[..3], [7, 2, 1]);
        let pixels = data.images.to_vec::<f32>().unwrap();
        assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        assert_eq!(pixels.iter().cloned().fold(0.0, f32::max), 1.0);
        let (train, test) = data.split(8000).unwrap();
        assert_eq!((train.len(), test.len()), (8000, 2000));
    }
}
