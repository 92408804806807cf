//! The server certificate: the operator's files from host.toml, or a self-signed certificate
//! that apid makes once and keeps under the state directory, so that clients which pinned it
//! keep working across restarts and reboots.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model::config::{HostConfig, MgmtAddress, Tls};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a usable TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The directory under the state directory that holds the generated certificate.
pub fn generated_dir(state: &Path) -> PathBuf {
    state.join("tls")
}

/// The TLS configuration apid serves with, per `config.api.tls`.
pub fn server_config(config: &HostConfig, state: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = match &config.api.tls {
        Tls::Files { cert, key } => (load_certs(cert)?, load_key(key)?),
        Tls::Generate => load_or_generate(&generated_dir(state), subject_names(config))?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // http/1.0 too: a client that offers only it (`curl --http1.0`) would otherwise fail the
    // handshake, as rustls refuses a client whose ALPN list has nothing in common with ours.
    server.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(server))
}

/// The console's line about the API, once its certificate is in place: where it listens and
/// the certificate's fingerprint (`SHA256:<hex>`, what `cairnctl` and `ci/appliance` show), so
/// an operator at the console can pin the certificate a client is shown.
pub fn banner(config: &HostConfig, state: &Path) -> String {
    let port = config.api.port;
    let url = match (&config.host.management.address, config.api.listen) {
        (_, ip) if !ip.is_unspecified() => format!("https://{}/RPC2", SocketAddr::new(ip, port)),
        (MgmtAddress::Static { address, .. }, _) => {
            format!(
                "https://{}/RPC2",
                SocketAddr::new(address.addr.into(), port)
            )
        }
        // DHCP: the address the lease gave, when netd has it by now (it starts before apid).
        _ => {
            let iface = &config.host.management.interface;
            match ipv4_of(iface) {
                Some(ip) => format!("https://{}/RPC2", SocketAddr::new(ip.into(), port)),
                None => format!("https://<{iface}>:{port}/RPC2"),
            }
        }
    };
    let cert = match &config.api.tls {
        Tls::Files { cert, .. } => cert.clone(),
        Tls::Generate => generated_dir(state).join("cert.pem"),
    };
    let fingerprint = std::fs::read_to_string(&cert)
        .ok()
        .and_then(|pem| model::token::pem_cert_fingerprint(&pem))
        .unwrap_or_else(|| format!("unknown ({} unreadable)", cert.display()));
    format!("cairn: API {url} certificate {fingerprint}")
}

/// The first IPv4 address of interface `name`, if it has one.
fn ipv4_of(name: &str) -> Option<std::net::Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
}

/// The names a client may reach this host by, as far as host.toml tells. A client that uses
/// another name (say, a DHCP address) pins the certificate instead (`cairnctl --ca-cert`).
pub fn subject_names(config: &HostConfig) -> Vec<String> {
    let mut names = vec![config.host.hostname.clone(), "localhost".into()];
    let mut add = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    add("127.0.0.1".into());
    add("::1".into());
    if !config.api.listen.is_unspecified() {
        add(config.api.listen.to_string());
    }
    if let MgmtAddress::Static { address, .. } = &config.host.management.address {
        add(address.addr.to_string());
    }
    names
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Reuses `dir/cert.pem` + `dir/key.pem` when both exist, else makes and stores a new pair.
pub fn load_or_generate(dir: &Path, names: Vec<String>) -> Result<Pair, TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        tracing::info!(cert = %cert_path.display(), "using the stored self-signed certificate");
        return Ok((load_certs(&cert_path)?, load_key(&key_path)?));
    }
    let made = rcgen::generate_simple_self_signed(names.clone())?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    // The key first: a crash in between leaves no certificate, so the next start regenerates.
    write_private(&key_path, made.signing_key.serialize_pem().as_bytes())?;
    write_private(&cert_path, made.cert.pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), ?names, "made a self-signed certificate");
    Ok((load_certs(&cert_path)?, load_key(&key_path)?))
}

/// Writes a file readable by its owner only, atomically (temporary file, then rename).
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |e: rustls_pki_types::pem::Error| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(iface: &str, extra_mgmt: &str, api: &str) -> HostConfig {
        let text = format!(
            "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"{iface}\"\n{extra_mgmt}\n\
             [api]\nport = 8443\n{api}\n"
        );
        model::config::parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_banner_names_the_url_and_the_generated_certificates_fingerprint() {
        let state = std::env::temp_dir().join(format!("cairn-banner-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let generate = "tls = \"generate\"";
        // DHCP on an interface without an address (yet): the URL says which interface.
        let dhcp = config("cairnnone0", "dhcp = true", generate);
        let line = banner(&dhcp, &state);
        assert!(
            line.starts_with("cairn: API https://<cairnnone0>:8443/RPC2 certificate unknown"),
            "{line}"
        );
        let (certs, _) = load_or_generate(&generated_dir(&state), vec!["h".into()]).unwrap();
        let want = model::token::cert_fingerprint(certs[0].as_ref());
        let line = banner(&dhcp, &state);
        assert!(line.ends_with(&format!("certificate {want}")), "{line}");
        // DHCP on an interface with an address: the URL names it.
        let lo = config("lo", "dhcp = true", generate);
        let line = banner(&lo, &state);
        assert!(
            line.starts_with("cairn: API https://127.0.0.1:8443/RPC2 "),
            "{line}"
        );
        let fixed = config(
            "eth0",
            "address = \"192.0.2.10/24\"\ngateway = \"192.0.2.1\"",
            generate,
        );
        assert!(banner(&fixed, &state).starts_with("cairn: API https://192.0.2.10:8443/RPC2 "));
        let listen = config(
            "eth0",
            "dhcp = true",
            "listen = \"192.0.2.7\"\ntls = \"generate\"",
        );
        assert!(banner(&listen, &state).starts_with("cairn: API https://192.0.2.7:8443/RPC2 "));
        fs::remove_dir_all(&state).unwrap();
    }
}
