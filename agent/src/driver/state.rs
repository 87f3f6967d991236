//! The agent's durable state file: the core's snapshot, written atomically in generations.
//!
//! A save writes `agent-state.tmp` and fsyncs it, hard-links the current file as
//! `agent-state.prev` (through `agent-state.prev.tmp` and a rename, so the previous generation
//! is replaced atomically too), renames the new file over `agent-state` and fsyncs the
//! directory. `agent-state` therefore exists at every instant once the first save is done, and
//! so does `agent-state.prev` once the second is: a crash anywhere leaves the current
//! generation in place, and the new one at most in the temp file. Every file is framed as
//!
//! ```text
//! "OPST" | format 1 (u8) | generation (u64 LE) | length (u32 LE) | CRC-32 of the payload (u32 LE) | payload
//! ```
//!
//! so a torn or corrupted write is detected. Loading reads all three names and takes the valid
//! file with the highest generation; whatever was skipped is reported so the log can say so.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"OPST";
const FORMAT: u8 = 1;
const HEADER: usize = 4 + 1 + 8 + 4 + 4;
/// The largest payload accepted (a sanity bound against a corrupt length field).
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// CRC-32 (IEEE), computed bit by bit: no lookup table in the static binary, and a state
/// snapshot of tens of KiB (a hundred tasks) takes well under a millisecond.
const CRC32: crc::Crc<u32, crc::NoTable> =
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

fn crc32(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

const CURRENT: &str = "agent-state";
const PREVIOUS: &str = "agent-state.prev";
const TEMP: &str = "agent-state.tmp";
const PREVIOUS_TEMP: &str = "agent-state.prev.tmp";

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest valid payload, with its generation and file name.
    pub payload: Option<(u64, String, Vec<u8>)>,
    /// Files that exist but were not usable, with why (for the log).
    pub rejected: Vec<(String, String)>,
}

/// The state file of one state directory.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    generation: u64,
}

fn frame(generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload and generation of a framed file, or why it is not valid.
fn unframe(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..4] != MAGIC {
        return Err("not an Outpost state file (bad magic)".into());
    }
    if bytes[4] != FORMAT {
        return Err(format!("format {} is not {FORMAT}", bytes[4]));
    }
    let generation = u64::from_le_bytes(bytes[5..13].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(bytes[13..17].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[17..21].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return Err(format!("length field {len} is not plausible"));
    }
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(format!(
            "truncated: payload {} of {len} bytes",
            payload.len()
        ));
    }
    if crc32(payload) != crc {
        return Err("checksum mismatch (corrupted)".into());
    }
    Ok((generation, payload))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl StateFile {
    /// Opens the state in `dir` (created if missing) and loads the newest valid generation.
    pub fn open(dir: &Path) -> io::Result<(Self, Loaded)> {
        fs::create_dir_all(dir)?;
        let mut loaded = Loaded::default();
        for name in [CURRENT, TEMP, PREVIOUS] {
            let bytes = match fs::read(dir.join(name)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    loaded.rejected.push((name.into(), e.to_string()));
                    continue;
                }
            };
            match unframe(&bytes) {
                Ok((generation, payload)) => {
                    let newer = loaded
                        .payload
                        .as_ref()
                        .is_none_or(|(g, _, _)| generation > *g);
                    if newer {
                        loaded.payload = Some((generation, name.into(), payload.to_vec()));
                    }
                }
                // A temp file is a save cut short: expected after a crash, not news.
                Err(_) if name == TEMP => {}
                Err(why) => loaded.rejected.push((name.into(), why)),
            }
        }
        let generation = loaded.payload.as_ref().map_or(0, |(g, _, _)| *g);
        Ok((
            Self {
                dir: dir.to_path_buf(),
                generation,
            },
            loaded,
        ))
    }

    /// The generation of the last save (or of what was loaded).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes `payload` as the next generation; durable when this returns `Ok`.
    pub fn save(&mut self, payload: &[u8]) -> io::Result<()> {
        let generation = self.generation + 1;
        let tmp = self.dir.join(TEMP);
        {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&frame(generation, payload))?;
            f.sync_all()?;
        }
        let current = self.dir.join(CURRENT);
        let prev_tmp = self.dir.join(PREVIOUS_TEMP);
        match fs::remove_file(&prev_tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::hard_link(&current, &prev_tmp) {
            Ok(()) => fs::rename(&prev_tmp, self.dir.join(PREVIOUS))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Replaces the current file atomically: there is no moment without one.
        fs::rename(&tmp, &current)?;
        sync_dir(&self.dir)?;
        self.generation = generation;
        Ok(())
    }

    /// The path of the current file (tests corrupt it).
    pub fn current_path(dir: &Path) -> PathBuf {
        dir.join(CURRENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("outpost-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_newest_generation_is_loaded_and_the_previous_kept() {
        let d = dir("newest");
        let (mut s, loaded) = StateFile::open(&d).unwrap();
        assert!(loaded.payload.is_none() && loaded.rejected.is_empty());
        s.save(b"one").unwrap();
        s.save(b"two").unwrap();
        let (s2, loaded) = StateFile::open(&d).unwrap();
        assert_eq!(loaded.payload, Some((2, CURRENT.into(), b"two".to_vec())));
        assert_eq!(s2.generation(), 2);
        assert_eq!(
            unframe(&fs::read(d.join(PREVIOUS)).unwrap()).unwrap(),
            (1, &b"one"[..])
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_truncated_or_corrupt_current_file_falls_back_to_the_previous_generation() {
        let d = dir("corrupt");
        let (mut s, _) = StateFile::open(&d).unwrap();
        s.save(b"good").unwrap();
        s.save(b"newer").unwrap();
        let cur = StateFile::current_path(&d);
        let bytes = fs::read(&cur).unwrap();
        fs::write(&cur, &bytes[..bytes.len() - 2]).unwrap();
        let (s2, loaded) = StateFile::open(&d).unwrap();
        assert_eq!(loaded.payload, Some((1, PREVIOUS.into(), b"good".to_vec())));
        assert_eq!(loaded.rejected[0].0, CURRENT);
        assert!(
            loaded.rejected[0].1.contains("truncated"),
            "{:?}",
            loaded.rejected
        );
        // The next save continues after the loaded generation.
        assert_eq!(s2.generation(), 1);

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        fs::write(&cur, &flipped).unwrap();
        let (_, loaded) = StateFile::open(&d).unwrap();
        assert!(
            loaded.rejected[0].1.contains("checksum"),
            "{:?}",
            loaded.rejected
        );
        fs::write(&cur, b"garbage").unwrap();
        let (_, loaded) = StateFile::open(&d).unwrap();
        assert_eq!(loaded.payload.unwrap().2, b"good");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_save_cut_at_any_step_leaves_the_current_generation_in_place() {
        let d = dir("cut");
        let (mut s, _) = StateFile::open(&d).unwrap();
        s.save(b"one").unwrap();
        s.save(b"two").unwrap();
        // Cut after the temp file is written: the current file is still there, and the new
        // generation is found in the temp file.
        fs::write(d.join(TEMP), frame(3, b"three")).unwrap();
        assert!(d.join(CURRENT).exists());
        let (_, loaded) = StateFile::open(&d).unwrap();
        assert_eq!(loaded.payload, Some((3, TEMP.into(), b"three".to_vec())));
        // Cut after the previous generation's link: both files still hold their generations.
        fs::remove_file(d.join(TEMP)).unwrap();
        fs::hard_link(d.join(CURRENT), d.join(PREVIOUS_TEMP)).unwrap();
        let (_, loaded) = StateFile::open(&d).unwrap();
        assert_eq!(loaded.payload, Some((2, CURRENT.into(), b"two".to_vec())));
        assert_eq!(
            unframe(&fs::read(d.join(PREVIOUS)).unwrap()).unwrap(),
            (1, &b"one"[..])
        );
        // The next save goes through despite the leftovers.
        let (mut s, _) = StateFile::open(&d).unwrap();
        s.save(b"three").unwrap();
        let (_, loaded) = StateFile::open(&d).unwrap();
        assert_eq!(loaded.payload, Some((3, CURRENT.into(), b"three".to_vec())));
        assert_eq!(
            unframe(&fs::read(d.join(PREVIOUS)).unwrap()).unwrap(),
            (2, &b"two"[..])
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
