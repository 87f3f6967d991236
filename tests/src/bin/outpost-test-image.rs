//! Builds the busybox-static test image under a tag: `outpost-test-image [TAG]` (default
//! `outpost-test/web:1`). `scripts/demo` uses it to stand in for `nginx:latest` offline.

use anyhow::Result;

fn main() -> Result<()> {
    let tag = std::env::args()
        .nth(1)
        .unwrap_or_else(|| outpost_tests::image::TEST_IMAGE.into());
    outpost_tests::docker::ensure_dockerd()?;
    outpost_tests::image::build(&tag)?;
    println!("built {tag}");
    Ok(())
}
