//! The node API's TLS (upstream `InitializeTLS` in
//! `cmd/kubelet/app/server.go` and the `tls*` fields of
//! `pkg/kubelet/apis/config/types.go`), with rustls.
//!
//! The serving certificate is `tlsCertFile`/`tlsPrivateKeyFile`, or, when
//! neither is given, a self-signed pair in `--cert-dir` (`kubelet.crt`,
//! `kubelet.key`), made once and reused, as upstream. Client certificates
//! are verified against `authentication.x509.clientCAFile` during the
//! handshake: a certificate from another CA or an expired one ends the
//! handshake (upstream reads such a request and answers `401`; either way
//! it is never served). A request without a certificate goes on to the
//! other authenticators.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;
use crate::auth::UserInfo;

/// How the node API serves TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The serving certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA bundle client certificates are verified against
    /// (`authentication.x509.clientCAFile`); `None`: client certificates
    /// are not asked for.
    pub client_ca_file: Option<PathBuf>,
    /// `tlsMinVersion`: `VersionTLS12` (the default) or `VersionTLS13`.
    pub min_version: Option<String>,
    /// `tlsCipherSuites` by their Go names; empty: rustls's defaults. TLS
    /// 1.3 suites are always enabled, as in Go.
    pub cipher_suites: Vec<String>,
}

fn tls_error(what: impl Into<String>) -> Error {
    Error::Tls(what.into())
}

/// The rustls name of a Go cipher suite name (`TLS_AES_128_GCM_SHA256` →
/// `TLS13_AES_128_GCM_SHA256`, `..._CHACHA20_POLY1305` →
/// `..._CHACHA20_POLY1305_SHA256`).
fn rustls_suite_name(go: &str) -> String {
    let mut name = if go.starts_with("TLS_AES_") || go.starts_with("TLS_CHACHA20_") {
        go.replacen("TLS_", "TLS13_", 1)
    } else {
        go.to_owned()
    };
    if name.ends_with("_CHACHA20_POLY1305") {
        name.push_str("_SHA256");
    }
    name
}

/// The rustls server configuration of `options`.
pub fn server_config(options: &TlsOptions) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !options.cipher_suites.is_empty() {
        let mut wanted = Vec::new();
        for go in &options.cipher_suites {
            let name = rustls_suite_name(go);
            let found = provider
                .cipher_suites
                .iter()
                .find(|s| format!("{:?}", s.suite()) == name)
                .copied();
            match found {
                Some(s) => wanted.push(s),
                None => {
                    return Err(tls_error(format!(
                        "tlsCipherSuites: {go:?} is not supported (only AEAD suites: ECDHE with \
                         AES-GCM or ChaCha20-Poly1305, and the TLS 1.3 suites)"
                    )));
                }
            }
        }
        let tls13: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for s in tls13 {
            if !wanted.contains(&s) {
                wanted.push(s);
            }
        }
        provider.cipher_suites = wanted;
    }
    let versions: &[&rustls::SupportedProtocolVersion] =
        match options.min_version.as_deref().unwrap_or("") {
            "" | "VersionTLS12" => &[&rustls::version::TLS13, &rustls::version::TLS12],
            "VersionTLS13" => &[&rustls::version::TLS13],
            other => {
                return Err(tls_error(format!(
                    "tlsMinVersion: {other:?} is not supported (VersionTLS12 or VersionTLS13)"
                )));
            }
        };
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| tls_error(format!("tlsCipherSuites/tlsMinVersion: {e}")))?;
    let builder = match &options.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error(format!("{}: {e}", ca.display())))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| tls_error(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let certs = read_certs(&options.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&options.key_file)
        .map_err(|e| tls_error(format!("{}: {e}", options.key_file.display())))?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(format!("{}: {e}", options.cert_file.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// The user of a verified client certificate: its Common Name, with its
/// Organizations as groups (upstream `x509.CommonNameUserConversion`).
/// `None` when it cannot be parsed or has no Common Name.
pub fn client_certificate_user(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(UserInfo {
        name,
        groups,
        ..UserInfo::default()
    })
}

/// The self-signed serving pair in `cert_dir` (`kubelet.crt`,
/// `kubelet.key`), made for `host` when missing (upstream `InitializeTLS`:
/// `certutil.GenerateSelfSignedCertKey`: a CA of its own, a serving
/// certificate for `host` valid one year, both in the certificate file).
pub fn self_signed(cert_dir: &Path, host: &str) -> Result<(PathBuf, PathBuf), Error> {
    let cert = cert_dir.join("kubelet.crt");
    let key = cert_dir.join("kubelet.key");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| tls_error(format!("{}: {e}", p.display()))
    };
    std::fs::create_dir_all(cert_dir).map_err(io(cert_dir))?;
    let gen_err = |e: rcgen::Error| tls_error(format!("generating a self-signed certificate: {e}"));
    let now = time::OffsetDateTime::now_utc();
    let stamp = now.unix_timestamp();
    let year = time::Duration::days(365);

    let ca_key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{host}-ca@{stamp}"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + year;
    let ca = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{host}@{stamp}"));
    params.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
        Ok(ip) => rcgen::SanType::IpAddress(ip),
        Err(_) => rcgen::SanType::DnsName(
            host.to_owned()
                .try_into()
                .map_err(|e: rcgen::Error| gen_err(e))?,
        ),
    }];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + year;
    let leaf = params.signed_by(&leaf_key, &issuer).map_err(gen_err)?;

    let bundle = format!("{}{}", leaf.pem(), ca.pem());
    write_private(&cert, bundle.as_bytes(), 0o644).map_err(io(&cert))?;
    write_private(&key, leaf_key.serialize_pem().as_bytes(), 0o600).map_err(io(&key))?;
    Ok((cert, key))
}

/// Writes `data` to `path` with `mode`, through a temporary file renamed
/// into place, so a crash never leaves half a key.
fn write_private(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_suite_names_map_to_rustls_and_unknown_ones_are_refused() {
        assert_eq!(
            rustls_suite_name("TLS_AES_128_GCM_SHA256"),
            "TLS13_AES_128_GCM_SHA256"
        );
        assert_eq!(
            rustls_suite_name("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"),
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let (cert_file, key_file) = self_signed(dir.path(), "node-1").expect("self-signed");
        let ok = TlsOptions {
            cert_file,
            key_file,
            cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
            ..TlsOptions::default()
        };
        server_config(&ok).expect("config");
        let cbc = TlsOptions {
            cipher_suites: vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()],
            ..ok.clone()
        };
        let e = server_config(&cbc).expect_err("CBC").to_string();
        assert!(e.contains("tlsCipherSuites") && e.contains("CBC"), "{e}");
        let old = TlsOptions {
            min_version: Some("VersionTLS10".into()),
            ..ok.clone()
        };
        let e = server_config(&old).expect_err("TLS 1.0").to_string();
        assert!(e.contains("tlsMinVersion"), "{e}");
        let missing = TlsOptions {
            client_ca_file: Some(dir.path().join("nope.crt")),
            ..ok
        };
        let e = server_config(&missing).expect_err("no CA file").to_string();
        assert!(e.contains("nope.crt"), "{e}");
    }

    #[test]
    fn the_self_signed_pair_is_made_once_with_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let (cert, key) = self_signed(dir.path(), "10.0.0.7").expect("made");
        let first = std::fs::read(&cert).expect("cert");
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let pems = read_certs(&cert).expect("parse");
        assert_eq!(pems.len(), 2, "the serving certificate and its CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(&pems[0]).expect("leaf");
        let cn = leaf.subject().iter_common_name().next().expect("cn");
        assert!(cn.as_str().expect("utf8").starts_with("10.0.0.7@"));
        let san = leaf
            .subject_alternative_name()
            .expect("ext")
            .expect("san")
            .value
            .general_names
            .clone();
        assert!(
            format!("{san:?}").contains("10.0.0.7") || format!("{san:?}").contains("[10, 0, 0, 7]")
        );
        self_signed(dir.path(), "10.0.0.7").expect("again");
        assert_eq!(std::fs::read(&cert).expect("cert"), first, "reused");
    }
}
