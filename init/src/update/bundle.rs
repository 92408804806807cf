//! Checking an update bundle (`model::update`) and taking its parts out, before anything is
//! written to a slot: the manifest first, its signature right after it when a key is pinned
//! (so a bundle nobody we trust signed is refused before its parts are even read), then each
//! part, hashed on its way to the staging directory and held to the manifest's size and digest.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use model::update::{MANIFEST, MANIFEST_MAX, Manifest, SIGNATURE};
use sha2::{Digest, Sha256};

use super::UpdateError;

const SIGNATURE_MAX: u64 = 4096;

/// The bundle at `bundle`, its parts written into `into` (which must exist and be empty).
pub fn unpack(bundle: &Path, into: &Path, key: Option<&str>) -> Result<Manifest, UpdateError> {
    let bad = |m: String| UpdateError::Invalid(format!("bundle: {m}"));
    let io = |e: std::io::Error| UpdateError::Io(format!("reading the bundle: {e}"));
    let file = File::open(bundle).map_err(io)?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().map_err(io)?;
    let mut next = || -> Result<Option<(String, u64, tar::Entry<'_, File>)>, UpdateError> {
        let Some(entry) = entries.next() else {
            return Ok(None);
        };
        let entry = entry.map_err(|e| bad(format!("not a bundle (tar): {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad("holds something other than plain files".into()));
        }
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let size = entry.size();
        Ok(Some((name, size, entry)))
    };

    let manifest_text = match next()? {
        Some((name, size, mut e)) if name == MANIFEST && size <= MANIFEST_MAX => {
            let mut text = String::new();
            e.read_to_string(&mut text)
                .map_err(|_| bad("MANIFEST is not text".into()))?;
            text
        }
        _ => return Err(bad("does not start with its MANIFEST".into())),
    };
    let manifest = Manifest::parse(&manifest_text).map_err(bad)?;
    let mut pending = next()?;
    let signature = match &mut pending {
        Some((name, size, e)) if name == SIGNATURE => {
            if *size > SIGNATURE_MAX {
                return Err(bad("MANIFEST.minisig is too large".into()));
            }
            let mut sig = String::new();
            e.read_to_string(&mut sig)
                .map_err(|_| bad("MANIFEST.minisig is not text".into()))?;
            pending = next()?;
            Some(sig)
        }
        _ => None,
    };
    if let Some(key) = key {
        check_signature(key, manifest_text.as_bytes(), signature.as_deref())?;
    } else if signature.is_some() {
        tracing::info!(
            "the bundle is signed, but no key is pinned ([update] public_key): not checked"
        );
    }

    let mut seen = Vec::new();
    while let Some((name, size, mut entry)) = pending {
        let Some((_, want_size, want_sha)) = manifest.parts.iter().find(|p| p.0 == name) else {
            return Err(bad(format!("{name:?} is not in its MANIFEST")));
        };
        if seen.contains(&name) {
            return Err(bad(format!("{name:?} comes twice")));
        }
        if size != *want_size {
            return Err(bad(format!(
                "{name} is {size} bytes, its MANIFEST says {want_size}"
            )));
        }
        let sha = copy_hashed(&mut entry, &into.join(&name))?;
        if sha != *want_sha {
            return Err(bad(format!(
                "{name}'s sha256 is {sha}, its MANIFEST says {want_sha}"
            )));
        }
        seen.push(name);
        pending = next()?;
    }
    if let Some((missing, _, _)) = manifest.parts.iter().find(|p| !seen.contains(&p.0)) {
        return Err(bad(format!("{missing} is missing")));
    }
    Ok(manifest)
}

fn check_signature(key: &str, manifest: &[u8], signature: Option<&str>) -> Result<(), UpdateError> {
    let refused = |m: &str| UpdateError::Invalid(format!("bundle: {m}"));
    let signature = signature.ok_or_else(|| {
        refused("not signed, and [update] public_key requires a signature (minisign -S)")
    })?;
    let key = minisign_verify::PublicKey::from_base64(key)
        .map_err(|e| UpdateError::Io(format!("the pinned key does not decode: {e}")))?;
    let signature = minisign_verify::Signature::decode(signature)
        .map_err(|_| refused("MANIFEST.minisig is not a minisign signature"))?;
    key.verify(manifest, &signature, false)
        .map_err(|_| refused("its signature is not the pinned key's ([update] public_key)"))
}

/// Copies `from` into a new file at `to`, synced; returns the sha256 of what was copied.
fn copy_hashed(from: &mut impl Read, to: &Path) -> Result<String, UpdateError> {
    let io = |e: std::io::Error| UpdateError::Io(format!("staging {}: {e}", to.display()));
    let mut out = File::create(to).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io)?;
    }
    out.sync_all().map_err(io)?;
    Ok(model::hex(&h.finalize()))
}
