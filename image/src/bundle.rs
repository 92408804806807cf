//! The update bundle of a build (`model::update`): `update/` holds the manifest and the OS
//! slot's files — sign `update/MANIFEST` there with the stock `minisign -S` if the hosts pin a
//! key — and `cairn-<version>.update` is that directory packed, written by `image build` and
//! again by `image bundle` after signing.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use model::update::{MANIFEST, Manifest, PARTS, SIGNATURE};
use sha2::{Digest, Sha256};

pub const DIR: &str = "update";

pub fn file_name(version: &str) -> String {
    format!("cairn-{version}.update")
}

/// Fills `out/update/` from `out/vmlinuz` and `out/initrd.img` (a signature of an earlier
/// manifest is removed: it would not match) and packs it.
pub fn write(out: &Path, version: &str) -> Result<PathBuf> {
    let dir = out.join(DIR);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut parts = Vec::new();
    for name in PARTS {
        let src = out.join(name);
        let dst = dir.join(name);
        fs::hard_link(&src, &dst)
            .or_else(|_| fs::copy(&src, &dst).map(|_| ()))
            .with_context(|| format!("{} into {}", src.display(), dir.display()))?;
        let (size, sha) = digest(&dst)?;
        parts.push((name.to_string(), size, sha));
    }
    let manifest = Manifest {
        version: version.to_string(),
        parts,
    };
    fs::write(dir.join(MANIFEST), manifest.render()).context("writing the manifest")?;
    pack(out)
}

/// Packs `out/update/` into `out/cairn-<version>.update`: the manifest, its signature when
/// there is one, then the parts.
pub fn pack(out: &Path) -> Result<PathBuf> {
    let dir = out.join(DIR);
    let text = fs::read_to_string(dir.join(MANIFEST)).with_context(|| {
        format!(
            "reading {}/{MANIFEST} (run image build first)",
            dir.display()
        )
    })?;
    let manifest = Manifest::parse(&text).map_err(anyhow::Error::msg)?;
    for (name, size, sha) in &manifest.parts {
        if digest(&dir.join(name))? != (*size, sha.clone()) {
            bail!(
                "{}/{name} is not the file the manifest names",
                dir.display()
            );
        }
    }
    let bundle = out.join(file_name(&manifest.version));
    let tmp = bundle.with_extension("update.tmp");
    let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut tar = tar::Builder::new(file);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut names = vec![MANIFEST.to_string()];
    if dir.join(SIGNATURE).exists() {
        names.push(SIGNATURE.to_string());
    }
    names.extend(manifest.parts.iter().map(|p| p.0.clone()));
    for name in names {
        tar.append_path_with_name(dir.join(&name), &name)
            .with_context(|| format!("adding {name} to the bundle"))?;
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .context("writing the bundle")?;
    fs::rename(&tmp, &bundle).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(bundle)
}

/// Size and sha256 (hex) of a file, read in chunks.
fn digest(path: &Path) -> Result<(u64, String)> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, model::hex(&h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_carries_the_manifest_first_and_every_part() {
        let out = std::env::temp_dir().join(format!("cairn-bundle-{}", std::process::id()));
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("vmlinuz"), b"kernel").unwrap();
        fs::write(out.join("initrd.img"), vec![7u8; 3000]).unwrap();
        let bundle = write(&out, "1.2.3").unwrap();
        assert_eq!(bundle, out.join("cairn-1.2.3.update"));
        let mut archive = tar::Archive::new(fs::File::open(&bundle).unwrap());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["MANIFEST", "vmlinuz", "initrd.img"]);
        // A signature made afterwards goes in second.
        fs::write(out.join(DIR).join(SIGNATURE), "sig").unwrap();
        pack(&out).unwrap();
        let mut archive = tar::Archive::new(fs::File::open(&bundle).unwrap());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["MANIFEST", "MANIFEST.minisig", "vmlinuz", "initrd.img"]
        );
        // A part changed after the manifest was written is refused.
        fs::write(out.join(DIR).join("vmlinuz"), b"other").unwrap();
        assert!(pack(&out).is_err());
        fs::remove_dir_all(&out).unwrap();
    }
}
