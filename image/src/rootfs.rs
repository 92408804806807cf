//! The appliance's root file system as a list of entries, and its serialisation into the
//! initramfs. Binaries get their shared libraries (from `ldd`) and are stripped of debug info on
//! the way in.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cpio;
use crate::kernel::run;

#[derive(Debug, Clone)]
pub enum Node {
    Dir { perm: u32 },
    File { perm: u32, src: Source },
    Symlink { target: String },
    CharDev { perm: u32, major: u32, minor: u32 },
}

#[derive(Debug, Clone)]
pub enum Source {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

/// Paths are absolute inside the image ("/usr/bin/netd"). A BTreeMap sorts a directory before
/// everything under it, which is the order the kernel's unpacker needs.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn dir(&mut self, path: &str) {
        self.parents(path);
        self.nodes
            .entry(path.to_string())
            .or_insert(Node::Dir { perm: 0o755 });
    }

    pub fn dir_mode(&mut self, path: &str, perm: u32) {
        self.parents(path);
        self.nodes.insert(path.to_string(), Node::Dir { perm });
    }

    pub fn bytes(&mut self, path: &str, perm: u32, data: impl Into<Vec<u8>>) {
        self.parents(path);
        self.nodes.insert(
            path.to_string(),
            Node::File {
                perm,
                src: Source::Bytes(data.into()),
            },
        );
    }

    pub fn host_file(&mut self, path: &str, perm: u32, src: PathBuf) {
        self.parents(path);
        self.nodes.insert(
            path.to_string(),
            Node::File {
                perm,
                src: Source::Host(src),
            },
        );
    }

    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.parents(path);
        self.nodes
            .insert(path.to_string(), Node::CharDev { perm, major, minor });
    }

    #[allow(dead_code)] // part of the tree's vocabulary; the ISO/PXE builders will use it
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.nodes.insert(
            path.to_string(),
            Node::Symlink {
                target: target.to_string(),
            },
        );
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    fn parents(&mut self, path: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if parent.is_empty() {
                break;
            }
            self.nodes
                .entry(parent.to_string())
                .or_insert(Node::Dir { perm: 0o755 });
            p = parent;
        }
    }

    /// Writes the tree as a newc archive at `out`.
    pub fn write_cpio(&self, out: &Path) -> Result<()> {
        let f = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = cpio::Writer::new(BufWriter::new(f));
        for (path, node) in &self.nodes {
            let name = path.trim_start_matches('/');
            let res = match node {
                Node::Dir { perm } => w.dir(name, *perm),
                Node::Symlink { target } => w.symlink(name, target),
                Node::CharDev { perm, major, minor } => w.char_dev(name, *perm, *major, *minor),
                Node::File { perm, src } => match src {
                    Source::Bytes(b) => w.file(name, *perm, b.len() as u64, &mut b.as_slice()),
                    Source::Host(p) => {
                        let mut f = fs::File::open(p)
                            .with_context(|| format!("opening {} for {path}", p.display()))?;
                        let len = f
                            .metadata()
                            .with_context(|| format!("stat {}", p.display()))?
                            .len();
                        w.file(name, *perm, len, &mut f)
                    }
                },
            };
            res.with_context(|| format!("archiving {path}"))?;
        }
        let mut inner = w.finish().context("finishing the archive")?;
        inner
            .flush()
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(())
    }
}

/// The shared objects a dynamically linked binary loads, as absolute host paths (including the
/// dynamic loader). A static binary yields an empty list.
pub fn shared_libs(bin: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("cannot run ldd (package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd exits 1 with "not a dynamic executable" for static binaries.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", bin.display(), err.trim());
    }
    parse_ldd(&text).with_context(|| format!("reading ldd output for {}", bin.display()))
}

pub fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        let path = if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                bail!("{} is not installed on the build host", name.trim());
            }
            rest.split_whitespace().next().unwrap_or("")
        } else {
            // The loader ("/lib64/ld-linux-x86-64.so.2 (0x…)") or the vDSO (no path).
            line.split_whitespace().next().unwrap_or("")
        };
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    Ok(libs)
}

/// Copies `src` into `staging` without debug info and returns the stripped copy.
pub fn stripped(src: &Path, staging: &Path) -> Result<PathBuf> {
    let rel = src.to_string_lossy().trim_start_matches('/').to_string();
    let dst = staging.join("strip").join(rel);
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(&dst))
    .with_context(|| format!("stripping {} (package binutils)", src.display()))?;
    Ok(dst)
}

/// Adds an executable at `dest` plus every library it needs at the same path it has on the
/// host (/lib/x86_64-linux-gnu/…, /lib64/ld-linux-x86-64.so.2), all stripped.
pub fn add_binary(tree: &mut Tree, dest: &str, src: &Path, staging: &Path) -> Result<()> {
    if !src.is_file() {
        bail!("{} does not exist", src.display());
    }
    tree.host_file(dest, 0o755, stripped(src, staging)?);
    for lib in shared_libs(src)? {
        if tree.contains(&lib) {
            continue;
        }
        // Copy the file the path resolves to: on merged-/usr hosts /lib is a symlink, and the
        // image keeps the path the loader asks for as a plain file.
        let real = fs::canonicalize(&lib).with_context(|| format!("resolving {lib}"))?;
        tree.host_file(&lib, 0o755, stripped(&real, staging)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn tree_orders_parents_first() {
        let mut t = Tree::default();
        t.bytes("/usr/bin/x", 0o755, b"x".to_vec());
        t.dir("/usr-local");
        t.char_dev("/dev/console", 0o600, 5, 1);
        let dir = std::env::temp_dir().join(format!("cairn-image-tree-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("t.cpio");
        t.write_cpio(&out).unwrap();
        let buf = fs::read(&out).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = cpio::read_all(&buf)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "usr",
                "usr-local",
                "usr/bin",
                "usr/bin/x"
            ]
        );
    }
}
