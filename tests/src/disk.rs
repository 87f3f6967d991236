//! A small filesystem of the test's own (a tmpfs mounted on a temporary directory, unmounted
//! on drop): a disk that fills without filling the machine's.

/// A mounted tmpfs.
pub struct SmallDisk {
    /// Where it is mounted.
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `512k`, `16m`).
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        crate::process::run(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path()),
        )
        .unwrap();
        Self { dir }
    }

    /// Writes zeros until the filesystem is full.
    pub fn fill(&self) {
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
    }

    /// Writes `bytes` zeros into the file `filler`.
    pub fn fill_bytes(&self, bytes: usize) {
        std::fs::write(self.dir.path().join("filler"), vec![0u8; bytes]).unwrap();
    }

    /// Removes what [`fill`](Self::fill) or [`fill_bytes`](Self::fill_bytes) wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}
