//! What the installer writes besides the OS, made at build time for the fixed layout of
//! `model::install`: GRUB for BIOS (its boot sector and core image, patched as grub-bios-setup
//! would patch them for a core in the BIOS boot partition) and the EFI system partition (GRUB
//! for UEFI and the boot menu both firmwares read). GRUB is Debian's (grub-pc-bin,
//! grub-efi-amd64-bin); the ESP is formatted with mtools. No loop devices, no root needed.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use model::install::{BIOS_BOOT, ESP, SECTOR, SLOT_A, SLOT_B, UPDATE_TRIES, grubenv};

/// Modules built into both GRUB images: nothing is loaded from disk at boot.
const MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "ext2",
    "normal",
    "linux",
    "echo",
    "test",
    "regexp",
    "configfile",
    "serial",
    "terminal",
    "loadenv",
];
const BIOS_MODULES: &[&str] = &["biosdisk"];
const EFI_MODULES: &[&str] = &["efi_gop", "all_video"];

const GRUB_PC: &str = "/usr/lib/grub/i386-pc";
/// Offsets in GRUB 2.06's boot.img (include/grub/i386/pc/boot.h).
const KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE: usize = 0x64;
const DRIVE_CHECK: usize = 0x66;
/// diskboot.img, core.img's first sector, ends with its block list: {start: u64, len: u16,
/// segment: u16}, read backwards until an entry of length 0.
const BLOCKLIST: usize = 512 - 12;

/// The ESP's FAT filesystem: 8 MiB holds GRUB (~0.7 MiB) with room for the update issue's
/// boot environment; the partition itself is larger.
const ESP_FS_SECTORS: u64 = 16384;

/// The kernel command line of the installed system (the live media add `retain_initrd`).
pub const INSTALLED_CMDLINE: &str = "console=tty0 console=ttyS0,115200n8 panic=-1 quiet";

/// Writes `boot.img`, `core.img` and `esp.img` into `dir`; the ESP's boot environment says
/// slot A holds `os_version`.
pub fn build(dir: &Path, staging: &Path, os_version: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let boot = fs::read(Path::new(GRUB_PC).join("boot.img"))
        .with_context(|| format!("reading {GRUB_PC}/boot.img (grub-pc-bin: see ci/deps)"))?;
    fs::write(dir.join(model::install::BOOT_IMG), boot_sector(boot)?)
        .context("writing boot.img")?;

    let core = staging.join("core.img");
    grub_mkimage("i386-pc", "(,gpt2)/grub", BIOS_MODULES, &core)?;
    let core = fs::read(&core).context("reading core.img")?;
    fs::write(dir.join(model::install::CORE_IMG), core_image(core)?).context("writing core.img")?;

    let efi = staging.join("BOOTX64.EFI");
    grub_mkimage("x86_64-efi", "/grub", EFI_MODULES, &efi)?;
    let cfg = staging.join("grub.cfg");
    fs::write(&cfg, grub_cfg()).context("writing grub.cfg")?;
    let env = staging.join("grubenv");
    let vars = [("slot", "a"), ("version_a", os_version)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let block = grubenv::render(&vars).context("the OS version does not fit GRUB's environment")?;
    fs::write(&env, block).context("writing grubenv")?;
    esp_image(&dir.join(model::install::ESP_IMG), &efi, &cfg, &env)
}

fn grub_mkimage(format: &str, prefix: &str, extra: &[&str], out: &Path) -> Result<()> {
    let out_put = Command::new("grub-mkimage")
        .args(["-O", format, "-p", prefix, "-o"])
        .arg(out)
        .args(MODULES)
        .args(extra)
        .output()
        .context("running grub-mkimage (grub-pc-bin, grub-efi-amd64-bin: see ci/deps)")?;
    if !out_put.status.success() {
        bail!(
            "grub-mkimage -O {format} failed: {}",
            String::from_utf8_lossy(&out_put.stderr)
        );
    }
    Ok(())
}

/// boot.img pointed at the core image's first sector, on whatever drive the BIOS booted
/// (0xff: take the drive from DL, with the check for BIOSes that pass a bad DL turned off,
/// as grub-bios-setup does for hard disks).
fn boot_sector(mut boot: Vec<u8>) -> Result<Vec<u8>> {
    if boot.len() != SECTOR as usize || boot[510..512] != [0x55, 0xaa] {
        bail!("boot.img is not GRUB's 512-byte boot sector");
    }
    boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&BIOS_BOOT.first_lba.to_le_bytes());
    boot[BOOT_DRIVE] = 0xff;
    boot[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(boot)
}

/// core.img whose first sector loads the rest from the sectors that follow it in the BIOS
/// boot partition: one block list entry, and a zero entry before it that ends the list.
fn core_image(mut core: Vec<u8>) -> Result<Vec<u8>> {
    let sectors = core.len().div_ceil(SECTOR as usize);
    core.resize(sectors * SECTOR as usize, 0);
    if sectors as u64 > BIOS_BOOT.sectors || sectors < 2 {
        bail!(
            "core.img has {sectors} sectors; the BIOS boot partition holds {}",
            BIOS_BOOT.sectors
        );
    }
    let list = &mut core[BLOCKLIST - 12..SECTOR as usize];
    list[..12].fill(0);
    list[12..20].copy_from_slice(&(BIOS_BOOT.first_lba + 1).to_le_bytes());
    let len = u16::try_from(sectors - 1).context("core.img too large for one block list entry")?;
    list[20..22].copy_from_slice(&len.to_le_bytes());
    // The segment (0x820, after diskboot itself at 0x8000) stays diskboot.img's default.
    if list[22..24] != 0x0820u16.to_le_bytes() {
        bail!("core.img's block list does not have the expected load segment: not GRUB 2.06?");
    }
    Ok(core)
}

/// The boot menu of the installed disk, for both firmwares: GRUB's root is then the ESP
/// (`hdN,gpt2`), and the slots are partitions 3 and 4 of the same disk.
///
/// A/B: grubenv's `slot` boots. An update sets `try_slot` and `tries`: each boot of the
/// updated slot takes one try, written back before the kernel starts; with none left GRUB
/// clears `try_slot` and boots `slot` again — the old system, which then reports the failed
/// update. The updated system makes itself `slot` once it is healthy (init).
pub fn grub_cfg() -> String {
    let slot = |name: &str, p: &model::install::Partition| {
        let n = model::install::PARTITIONS
            .iter()
            .position(|q| q == p)
            .map_or(0, |i| i + 1);
        format!(
            "menuentry \"Cairn (slot {name})\" --id {lower} {{\n  \
               linux ($disk,gpt{n})/vmlinuz {INSTALLED_CMDLINE} cairn.slot={lower}\n  \
               initrd ($disk,gpt{n})/initrd.img\n\
             }}\n",
            lower = name.to_lowercase(),
        )
    };
    // GRUB has no arithmetic: one branch per try left.
    let mut tries = String::new();
    for n in (1..=UPDATE_TRIES).rev() {
        tries.push_str(&format!(
            "  {}if [ \"$tries\" = \"{n}\" ]; then\n    set tries={}\n    set default=\"$try_slot\"\n",
            if n == UPDATE_TRIES { "" } else { "el" },
            n - 1
        ));
    }
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=1\n\
         regexp --set=1:disk '^(.*),gpt[0-9]+$' \"$root\"\n\
         set env=($root)/{env}\n\
         load_env --file $env slot try_slot tries\n\
         if [ -z \"$slot\" ]; then set slot=a; fi\n\
         set default=\"$slot\"\n\
         if [ -n \"$try_slot\" ]; then\n\
         {tries}  else\n    set try_slot=\n  fi\n  \
           save_env --file $env try_slot tries\n\
         fi\n\
         {}{}",
        slot("A", &SLOT_A),
        slot("B", &SLOT_B),
        env = model::install::GRUBENV_PATH,
    )
}

fn esp_image(out: &Path, efi: &Path, cfg: &Path, env: &Path) -> Result<()> {
    let _ = fs::remove_file(out);
    let img = out.display().to_string();
    let mtools = |args: &[&str]| -> Result<()> {
        let o = Command::new(args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .with_context(|| format!("running {} (mtools: see ci/deps)", args[0]))?;
        if !o.status.success() {
            bail!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(())
    };
    let total = ESP_FS_SECTORS.to_string();
    mtools(&[
        "mformat", "-i", &img, "-C", "-T", &total, "-h", "2", "-s", "32", "-v", ESP.label, "::",
    ])?;
    mtools(&["mmd", "-i", &img, "::/EFI", "::/EFI/BOOT", "::/grub"])?;
    let efi = efi.display().to_string();
    let cfg = cfg.display().to_string();
    mtools(&["mcopy", "-i", &img, &efi, "::/EFI/BOOT/BOOTX64.EFI"])?;
    mtools(&["mcopy", "-i", &img, &cfg, "::/grub/grub.cfg"])?;
    let env = env.display().to_string();
    mtools(&[
        "mcopy",
        "-i",
        &img,
        &env,
        &format!("::/{}", model::install::GRUBENV_PATH),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_sector_points_at_the_bios_boot_partition() {
        let mut raw = vec![0u8; 512];
        raw[510..].copy_from_slice(&[0x55, 0xaa]);
        let b = boot_sector(raw).unwrap();
        assert_eq!(u64::from_le_bytes(b[0x5c..0x64].try_into().unwrap()), 2048);
        assert_eq!((b[0x64], b[0x66], b[0x67]), (0xff, 0x90, 0x90));
        assert!(boot_sector(vec![0u8; 512]).is_err());
    }

    #[test]
    fn the_core_image_loads_its_own_sectors() {
        let mut raw = vec![0xaau8; 3 * 512 + 100];
        raw[510..512].copy_from_slice(&0x0820u16.to_le_bytes());
        let c = core_image(raw).unwrap();
        assert_eq!(c.len(), 4 * 512);
        assert_eq!(u64::from_le_bytes(c[500..508].try_into().unwrap()), 2049);
        assert_eq!(u16::from_le_bytes([c[508], c[509]]), 3);
        assert_eq!(&c[488..500], &[0u8; 12], "the list's end");
        assert_eq!(c[3 * 512 + 99], 0xaa);
        assert_eq!(c[3 * 512 + 100], 0, "padded to a sector");
    }

    #[test]
    fn live_media_boot_the_installed_line_and_keep_their_initramfs() {
        assert_eq!(
            crate::media::CMDLINE,
            format!("{INSTALLED_CMDLINE} retain_initrd")
        );
    }

    #[test]
    fn the_menu_boots_slot_a_from_the_same_disk() {
        let cfg = grub_cfg();
        let a = cfg.find("(slot A)").unwrap();
        assert!(cfg.find("(slot B)").unwrap() > a, "A is the default");
        assert!(cfg.contains("linux ($disk,gpt3)/vmlinuz"));
        assert!(cfg.contains("initrd ($disk,gpt4)/initrd.img"));
        assert!(cfg.contains("cairn.slot=a") && !cfg.contains("retain_initrd"));
        assert!(cfg.contains("--id a {") && cfg.contains("--id b {"));
        assert!(
            cfg.contains("if [ \"$tries\" = \"2\" ]; then\n    set tries=1\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("elif [ \"$tries\" = \"1\" ]; then\n    set tries=0\n"),
            "{cfg}"
        );
    }

    /// Against Debian's real GRUB files, when they are installed (ci/deps puts them there).
    #[test]
    fn debian_grub_images_are_patched() {
        let dir = std::env::temp_dir().join(format!("cairn-grub-{}", std::process::id()));
        let staging = dir.join("staging");
        fs::create_dir_all(&staging).unwrap();
        build(&dir, &staging, "9.9.9").unwrap();
        let core = fs::read(dir.join("core.img")).unwrap();
        assert_eq!(core.len() % 512, 0);
        let boot = fs::read(dir.join("boot.img")).unwrap();
        assert_eq!(boot.len(), 512);
        let esp = fs::read(dir.join("esp.img")).unwrap();
        assert_eq!(esp.len() as u64, ESP_FS_SECTORS * 512);
        assert_eq!(&esp[510..512], &[0x55, 0xaa]);
        let mtype = |path: &str| {
            let out = Command::new("mtype")
                .args(["-i"])
                .arg(dir.join("esp.img"))
                .arg(format!("::/{path}"))
                .env("MTOOLS_SKIP_CHECK", "1")
                .output()
                .unwrap();
            assert!(out.status.success(), "mtype {path}");
            out.stdout
        };
        let env = grubenv::parse(&mtype(model::install::GRUBENV_PATH)).unwrap();
        assert_eq!(env.get("slot").map(String::as_str), Some("a"));
        assert_eq!(env.get("version_a").map(String::as_str), Some("9.9.9"));
        let cfg = String::from_utf8(mtype("grub/grub.cfg")).unwrap();
        assert_eq!(cfg, grub_cfg());
        print!("{cfg}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
