//! Image garbage collection, as kubelet and Nomad do it: when the filesystem holding dockerd's
//! images is fuller than `[images] gc_high_percent`, the images this agent pulled or ran that
//! no task it knows uses are removed, least recently used first, until it is below
//! `gc_low_percent`.
//!
//! Only images the agent itself used are candidates (as Nomad does; kubelet takes every
//! image): what an operator or another program put into the same dockerd is left alone. The
//! record of them, with when each was last used, is the file `images` in the state directory,
//! one `<unix ms> <reference>` line each. An image is removed by its reference without force:
//! dockerd only untags it while another tag names it, and refuses while any container (the
//! agent's or not) uses it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;

use crate::config::ImageGc;

/// The images this agent pulled or ran, with when each was last used (wall clock, ms).
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
    used: Mutex<BTreeMap<String, u64>>,
    /// Images removed since the agent started.
    removed: AtomicU64,
}

/// `image` as dockerd names it: an untagged reference means `:latest`.
pub fn reference(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    if name.contains(':') || name.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

impl Record {
    /// Reads `state_dir/images` (missing or unreadable: empty; bad lines skipped).
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join("images");
        let used = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (at, image) = l.split_once(' ')?;
                Some((image.to_string(), at.parse().ok()?))
            })
            .collect();
        Self {
            path,
            used: Mutex::new(used),
            removed: AtomicU64::new(0),
        }
    }

    /// Notes that `image` was just pulled or used for a container.
    pub fn touch(&self, image: &str, now_ms: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.insert(reference(image), now_ms);
        self.save(&used);
    }

    fn forget(&self, image: &str) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.remove(image);
        self.save(&used);
    }

    /// Writes the record whole (a temporary file renamed over it); a failure is logged: the
    /// worst it costs is an image kept or forgotten.
    fn save(&self, used: &BTreeMap<String, u64>) {
        let text: String = used.iter().map(|(i, at)| format!("{at} {i}\n")).collect();
        let tmp = self.path.with_extension("tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot save the image record");
        }
    }

    /// Images removed since the agent started.
    pub fn removed(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }
}

/// The images that may be removed, least recently used first: those recorded that no task in
/// `keep` names.
pub fn candidates(used: &BTreeMap<String, u64>, keep: &HashSet<String>) -> Vec<String> {
    let mut out: Vec<(&u64, &String)> = used
        .iter()
        .filter(|(image, _)| !keep.contains(*image))
        .map(|(image, at)| (at, image))
        .collect();
    out.sort();
    out.into_iter().map(|(_, image)| image.clone()).collect()
}

/// How full (per cent, as `df` counts it: blocks reserved for root count neither as used nor
/// as available) the filesystem holding `path` is, with its size as that count sees it (used +
/// available) and what is available, in bytes.
pub fn usage(path: &Path) -> Option<(f64, u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    let block = s.f_frsize.max(1);
    let used = s.f_blocks.saturating_sub(s.f_bfree);
    let denominator = used + s.f_bavail;
    if denominator == 0 {
        return None;
    }
    let percent = used as f64 * 100.0 / denominator as f64;
    Some((percent, denominator * block, s.f_bavail * block))
}

/// One collection: when the images' filesystem is above the high threshold, removes
/// candidates until it is below the low one or none is left. `keep`: the images of every task
/// the agent knows (running, in backoff, restored), by [`reference`].
pub async fn collect(docker: &Docker, record: &Record, gc: &ImageGc, keep: &HashSet<String>) {
    let Some((percent, _, _)) = usage(&gc.path) else {
        return;
    };
    if percent <= f64::from(gc.high_percent) {
        return;
    }
    let list = {
        let used = record.used.lock().unwrap_or_else(|p| p.into_inner());
        candidates(&used, keep)
    };
    let mut now = percent;
    for image in list {
        if now < f64::from(gc.low_percent) {
            break;
        }
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match docker.remove_image(&image, Some(options), None).await {
            Ok(_) => {
                record.forget(&image);
                let total = record.removed.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(
                    %image,
                    disk_used_percent = format!("{now:.1}"),
                    gc_high_percent = gc.high_percent,
                    removed_since_start = total,
                    "image garbage collection removed an unused image"
                );
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => record.forget(&image),
            // In use by a container (ours being removed, or another program's): kept.
            Err(e) => tracing::debug!(%image, error = %e, "image kept"),
        }
        now = usage(&gc.path).map_or(0.0, |u| u.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_the_recorded_images_no_task_uses_least_recently_used_first() {
        let used = BTreeMap::from([
            ("a:1".to_string(), 300),
            ("b:latest".to_string(), 100),
            ("c:2".to_string(), 200),
            ("d:3".to_string(), 50),
        ]);
        let keep = HashSet::from(["d:3".to_string()]);
        assert_eq!(candidates(&used, &keep), ["b:latest", "c:2", "a:1"]);
    }

    #[test]
    fn references_name_the_latest_tag_when_none_is_given() {
        assert_eq!(reference("busybox"), "busybox:latest");
        assert_eq!(reference("registry:5000/app"), "registry:5000/app:latest");
        assert_eq!(reference("registry:5000/app:2"), "registry:5000/app:2");
        assert_eq!(reference("app@sha256:ab"), "app@sha256:ab");
    }

    #[test]
    fn the_record_survives_a_restart_and_skips_bad_lines() {
        let dir = std::env::temp_dir().join(format!("outpost-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Record::open(&dir);
        r.touch("web", 10);
        r.touch("db:2", 20);
        r.forget("web:latest");
        let text = std::fs::read_to_string(dir.join("images")).unwrap();
        std::fs::write(dir.join("images"), format!("{text}garbage\n")).unwrap();
        let again = Record::open(&dir);
        let used = again.used.lock().unwrap().clone();
        assert_eq!(used, BTreeMap::from([("db:2".to_string(), 20)]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
