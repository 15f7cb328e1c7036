//! Prints the markdown table of the backend comparison from criterion's results under
//! `target/criterion/<backend>/<operation>-<bits>/<size>/new/`: one row per backend, window and
//! message size, compress and inflate in MB/s (10^6 bytes of uncompressed payload per second,
//! at criterion's median time).

use std::path::Path;

const BACKENDS: [&str; 3] = ["zlib-rs", "zlib-ng", "miniz"];
const SIZES: [u64; 3] = [1024, 16 * 1024, 64 * 1024];

/// MB/s of one result, or `None` if that benchmark did not run.
fn mb_per_s(dir: &Path, size: u64) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let median_ns = json["median"]["point_estimate"].as_f64()?;
    Some(size as f64 / median_ns * 1e3)
}

fn main() {
    let criterion = Path::new("target/criterion");
    println!("| backend | window | message | compress | inflate |");
    println!("|---|---:|---:|---:|---:|");
    for backend in BACKENDS {
        for bits in [15, 10] {
            for size in SIZES {
                let cell = |op: &str| {
                    let dir =
                        criterion.join(backend).join(format!("{op}-{bits}")).join(size.to_string());
                    mb_per_s(&dir, size).map(|v| format!("{v:.0} MB/s"))
                };
                let (compress, inflate) = (cell("compress"), cell("inflate"));
                if compress.is_none() && inflate.is_none() {
                    if bits != 15 && size == SIZES[0] && criterion.join(backend).exists() {
                        println!("| {backend} | {bits} bits | – | not supported | not supported |");
                    }
                    continue;
                }
                let or_dash = |c: Option<String>| c.unwrap_or_else(|| "–".to_owned());
                println!(
                    "| {backend} | {bits} bits | {} KiB | {} | {} |",
                    size / 1024,
                    or_dash(compress),
                    or_dash(inflate)
                );
            }
        }
    }
}
