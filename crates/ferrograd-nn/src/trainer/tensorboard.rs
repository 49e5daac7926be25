//! TensorBoard event files: scalars and images, written so that `tensorboard --logdir runs`
//! shows a run, and read back (every record's length and CRC checked) for tests and tools.
//!
//! A file is a sequence of records `u64 length · u32 masked CRC32C(length) · data · u32 masked
//! CRC32C(data)`, each `data` one `Event` protocol buffer. The few fields used are encoded here
//! by hand: a protobuf crate and generated code would be larger than the whole format.

use ferrograd::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One event as written or read: a step's scalars and images, or the file's version line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    /// Only in a file's first event: `brain.Event:2`.
    pub file_version: Option<String>,
    pub scalars: Vec<(String, f32)>,
    pub images: Vec<Image>,
}

/// An encoded image of a summary (PNG bytes) with its size.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub tag: String,
    pub height: u32,
    pub width: u32,
    /// 1 gray, 3 RGB, 4 RGBA.
    pub colorspace: u32,
    pub png: Vec<u8>,
}

/// Appends events to a new file `events.out.tfevents.<time>.<host>.<pid>` in a folder, each
/// record flushed as written so that a crash loses at most the one being written.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let secs = wall_time();
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or_else(|| "localhost".into());
        let name = format!("events.out.tfevents.{}.{host}.{}", secs as u64, std::process::id());
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| {
            Error::io("tensorboard", format!("cannot create {}: {e}", path.display()))
        })?;
        let mut w = EventWriter { path, file: BufWriter::new(file) };
        w.write(&Event {
            wall_time: secs,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            scalars: vec![],
            images: vec![],
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let scalars = values.iter().map(|(k, v)| (k.clone(), *v as f32)).collect();
        self.write(&Event {
            wall_time: wall_time(),
            step: step as i64,
            file_version: None,
            scalars,
            images: vec![],
        })
    }

    pub fn image(&mut self, step: u64, image: Image) -> Result<()> {
        self.write(&Event {
            wall_time: wall_time(),
            step: step as i64,
            file_version: None,
            scalars: vec![],
            images: vec![image],
        })
    }

    pub fn write(&mut self, event: &Event) -> Result<()> {
        let data = encode_event(event);
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc32c(&data).to_le_bytes());
        self.file.write_all(&record).and_then(|()| self.file.flush()).map_err(|e| {
            Error::io("tensorboard", format!("cannot write {}: {e}", self.path.display()))
        })
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every event of a file, each record's length and both checksums verified: an error names
/// the file and the byte offset where it stops being an event file.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io("read_events", format!("cannot read {}: {e}", path.display())))?;
    let bad = |at: usize, what: &str| {
        Error::io("read_events", format!("{}: at byte {at}: {what}", path.display()))
    };
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes.get(at..at + 12).ok_or_else(|| bad(at, "truncated record header"))?;
        let len_bytes = &header[..8];
        if u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"))
            != masked_crc32c(len_bytes)
        {
            return Err(bad(at, "length checksum mismatch"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        // The length is checked against what the file holds before anything is taken.
        let end = usize::try_from(len)
            .ok()
            .and_then(|n| (at + 12).checked_add(n))
            .filter(|&e| e + 4 <= bytes.len())
            .ok_or_else(|| {
                bad(at, &format!("record of {len} bytes runs past the end of the file"))
            })?;
        let data = &bytes[at + 12..end];
        if u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes"))
            != masked_crc32c(data)
        {
            return Err(bad(at, "data checksum mismatch"));
        }
        events.push(decode_event(data).map_err(|what| bad(at, &what))?);
        at = end + 4;
    }
    Ok(events)
}

// ---- CRC32C ------------------------------------------------------------------------------

/// CRC-32C (Castagnoli), reflected, as TFRecord files use it; a table of 256 entries built
/// at compile time.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// TFRecord's masked CRC: a CRC of data that holds CRCs is no longer a good checksum.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

// ---- protocol buffers: Event { wall_time = 1, step = 2, file_version = 3, summary = 5 },
// Summary { repeated Value value = 1 }, Value { tag = 1, simple_value = 2, image = 4 },
// Image { height = 1, width = 2, colorspace = 3, encoded_image_string = 4 } ------------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn encode_event(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    key(&mut out, 1, 1);
    out.extend_from_slice(&e.wall_time.to_le_bytes());
    key(&mut out, 2, 0);
    varint(&mut out, e.step as u64);
    if let Some(v) = &e.file_version {
        bytes_field(&mut out, 3, v.as_bytes());
    }
    if !e.scalars.is_empty() || !e.images.is_empty() {
        let mut summary = Vec::new();
        for (tag, v) in &e.scalars {
            let mut value = Vec::new();
            bytes_field(&mut value, 1, tag.as_bytes());
            key(&mut value, 2, 5);
            value.extend_from_slice(&v.to_le_bytes());
            bytes_field(&mut summary, 1, &value);
        }
        for im in &e.images {
            let mut image = Vec::new();
            for (field, v) in [(1, im.height), (2, im.width), (3, im.colorspace)] {
                key(&mut image, field, 0);
                varint(&mut image, v as u64);
            }
            bytes_field(&mut image, 4, &im.png);
            let mut value = Vec::new();
            bytes_field(&mut value, 1, im.tag.as_bytes());
            bytes_field(&mut value, 4, &image);
            bytes_field(&mut summary, 1, &value);
        }
        bytes_field(&mut out, 5, &summary);
    }
    out
}

/// A protobuf message's fields in order: (field number, value).
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

fn fields(mut data: &[u8]) -> std::result::Result<Vec<(u64, Field<'_>)>, String> {
    fn read_varint(data: &mut &[u8]) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = data.split_first().ok_or("truncated varint")?;
            *data = rest;
            v |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let k = read_varint(&mut data)?;
        let take = |data: &mut &[u8], n: usize| -> std::result::Result<Vec<u8>, String> {
            if data.len() < n {
                return Err("truncated field".into());
            }
            let (a, b) = data.split_at(n);
            *data = b;
            Ok(a.to_vec())
        };
        let field = match k & 7 {
            0 => Field::Varint(read_varint(&mut data)?),
            1 => Field::Fixed64(take(&mut data, 8)?.try_into().expect("8 bytes")),
            5 => Field::Fixed32(take(&mut data, 4)?.try_into().expect("4 bytes")),
            2 => {
                let n = read_varint(&mut data)?;
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= data.len())
                    .ok_or("field runs past its message")?;
                let (a, b) = data.split_at(n);
                data = b;
                Field::Bytes(a)
            }
            w => return Err(format!("unknown wire type {w}")),
        };
        out.push((k >> 3, field));
    }
    Ok(out)
}

fn text(b: &[u8]) -> std::result::Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a tag is not UTF-8".to_string())
}

fn decode_event(data: &[u8]) -> std::result::Result<Event, String> {
    let mut e =
        Event { wall_time: 0.0, step: 0, file_version: None, scalars: vec![], images: vec![] };
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => e.step = v as i64,
            (3, Field::Bytes(b)) => e.file_version = Some(text(b)?),
            (5, Field::Bytes(summary)) => {
                for (n, f) in fields(summary)? {
                    let (1, Field::Bytes(value)) = (n, f) else { continue };
                    let (mut tag, mut scalar, mut image) = (String::new(), None, None);
                    for (n, f) in fields(value)? {
                        match (n, f) {
                            (1, Field::Bytes(b)) => tag = text(b)?,
                            (2, Field::Fixed32(b)) => scalar = Some(f32::from_le_bytes(b)),
                            (4, Field::Bytes(b)) => image = Some(decode_image(b)?),
                            _ => {}
                        }
                    }
                    if let Some(v) = scalar {
                        e.scalars.push((tag.clone(), v));
                    }
                    if let Some(mut im) = image {
                        im.tag = tag;
                        e.images.push(im);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

fn decode_image(data: &[u8]) -> std::result::Result<Image, String> {
    let mut im = Image { tag: String::new(), height: 0, width: 0, colorspace: 0, png: vec![] };
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Varint(v)) => im.height = v as u32,
            (2, Field::Varint(v)) => im.width = v as u32,
            (3, Field::Varint(v)) => im.colorspace = v as u32,
            (4, Field::Bytes(b)) => im.png = b.to_vec(),
            _ => {}
        }
    }
    Ok(im)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn events_round_trip_and_a_flipped_bit_is_caught() {
        let dir = std::env::temp_dir().join(format!("ferrograd-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalars(3, &[("train/loss".into(), 0.25), ("lr".into(), 1e-3)]).unwrap();
        let png = vec![1u8, 2, 3];
        let image = Image { tag: "attention".into(), height: 2, width: 5, colorspace: 3, png };
        w.image(4, image.clone()).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(events[1].step, 3);
        assert_eq!(events[1].scalars, vec![("train/loss".into(), 0.25), ("lr".into(), 1e-3)]);
        assert_eq!(events[2].images, vec![image]);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        bytes.truncate(n - 3);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
