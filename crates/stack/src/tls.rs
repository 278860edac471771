//! A private certificate authority for the stack's TLS-only servers (`runbook stack up --tls`)
//! and the tests that prove certificate checks: server certificates for loopback, client
//! certificates, and the bad ones (another CA, a wrong name, expired).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

fn err(e: rcgen::Error) -> std::io::Error {
    std::io::Error::other(format!("certificate: {e}"))
}

/// A CA: its certificate on disk (`<dir>/<name>.crt`), its key in memory only.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub cert_path: PathBuf,
}

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

impl Ca {
    /// A new CA named `name`, its certificate written to `<dir>/<name>.crt`.
    pub fn create(dir: &Path, name: &str) -> std::io::Result<Ca> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).map_err(err)?;
        let cert_path = dir.join(format!("{name}.crt"));
        write(&cert_path, &cert.pem(), 0o644)?;
        Ok(Ca {
            cert,
            key,
            cert_path,
        })
    }

    /// A certificate for `names` (DNS names or IP addresses) with `common_name` as its subject
    /// (PostgreSQL's `cert` authentication maps it to the user), written to
    /// `<dir>/<stem>.crt` and `<dir>/<stem>.key` (mode 600). `expired` makes one that ended
    /// yesterday.
    pub fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        common_name: &str,
        expired: bool,
    ) -> std::io::Result<Issued> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate().map_err(err)?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let day = 86_400;
        let at = |secs: i64| {
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(secs as u64)
        };
        if expired {
            params.not_before = at(now - 30 * day);
            params.not_after = at(now - day);
        } else {
            params.not_before = at(now - day);
            params.not_after = at(now + 365 * day);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(err)?;
        let issued = Issued {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        write(&issued.cert, &cert.pem(), 0o644)?;
        write(&issued.key, &key.serialize_pem(), 0o600)?;
        Ok(issued)
    }
}

/// What a TLS-only stack's servers and clients use: the CA, a server certificate for
/// loopback (127.0.0.1 and localhost), and a client certificate for the `postgres` user.
#[derive(Debug, Clone)]
pub struct StackTls {
    pub ca: PathBuf,
    pub server: Issued,
    pub client: Issued,
}

impl StackTls {
    pub fn create(dir: &Path) -> std::io::Result<StackTls> {
        let ca = Ca::create(dir, "ca")?;
        let server = ca.issue(
            dir,
            "server",
            &["127.0.0.1", "localhost"],
            "localhost",
            false,
        )?;
        let client = ca.issue(dir, "client", &[], "postgres", false)?;
        Ok(StackTls {
            ca: ca.cert_path.clone(),
            server,
            client,
        })
    }
}
