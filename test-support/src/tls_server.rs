//! A real `redis-server` that speaks TLS, with certificates made for the
//! test (by the `openssl` command-line tool, in a temporary directory
//! removed on drop).
//!
//! The server listens on two loopback ports: its TLS port, which the cache
//! under test is given (`rediss://`), and a plain one the test itself uses
//! to check readiness and to inspect keys ([`TlsRedisServer::plain`]), so
//! the harness needs no TLS of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{RedisServer, free_port};

/// A private certificate authority and one server certificate it signed,
/// as PEM files in a temporary directory (removed on drop).
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// A new CA (its own key, never reused) and a certificate it signed
    /// for `hosts` (each an IP address or a DNS name, as subject
    /// alternative names). EC P-256 keys: made in milliseconds.
    ///
    /// Panics with `openssl`'s output when it cannot be run.
    pub fn generate(hosts: &[&str]) -> Certificates {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cache-test-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir for certificates");
        let certificates = Certificates { dir };
        let names = hosts
            .iter()
            .map(|host| match host.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{host}"),
                Err(_) => format!("DNS:{host}"),
            })
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(
            certificates.path("server.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName={names}\n"
            ),
        )
        .expect("write the server certificate's extensions");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        certificates.openssl(
            &[
                &["req", "-x509", "-nodes", "-days", "2"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt"],
                &["-subj", "/CN=cache test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        certificates.openssl(
            &[
                &["req", "-nodes"][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr"],
                &["-subj", "/CN=cache test server"],
            ]
            .concat(),
        );
        certificates.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        certificates
    }

    /// The CA's certificate (PEM): what a client that trusts it is given.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path("ca.crt")).expect("read the CA certificate")
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// The server's certificate file.
    pub fn cert_file(&self) -> PathBuf {
        self.path("server.crt")
    }

    /// The server's private key file.
    pub fn key_file(&self) -> PathBuf {
        self.path("server.key")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `openssl` ({error}); the TLS tests make their certificates with it"
                )
            });
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` on a free loopback port that speaks TLS only there
/// (clients need not present a certificate), killed on drop.
pub struct TlsRedisServer {
    // Declared first: dropped (killed) before its certificates are removed.
    server: RedisServer,
    tls_port: u16,
    certificates: Certificates,
}

impl TlsRedisServer {
    /// A server whose certificate names `127.0.0.1` and `localhost`,
    /// signed by a CA of its own ([`ca_pem`](TlsRedisServer::ca_pem)).
    pub fn start() -> TlsRedisServer {
        TlsRedisServer::start_for(&["127.0.0.1", "localhost"])
    }

    /// A server whose certificate names only `hosts`: reached as
    /// `127.0.0.1` with other names, its certificate is for another host.
    pub fn start_for(hosts: &[&str]) -> TlsRedisServer {
        let certificates = Certificates::generate(hosts);
        let mut last_log = String::new();
        // Either port can be taken between our probe and the server's
        // bind: try a few.
        for _ in 0..5 {
            let tls_port = free_port();
            let args = tls_args(tls_port, &certificates);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match RedisServer::start_on_with(free_port(), &args) {
                Ok(server) => {
                    return TlsRedisServer {
                        server,
                        tls_port,
                        certificates,
                    };
                }
                Err(log) => last_log = log,
            }
        }
        panic!(
            "redis-server with TLS did not start (was it built with TLS? `redis-server --tls-port 0` fails otherwise); its log:\n{last_log}"
        );
    }

    /// `rediss://127.0.0.1:<tls port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    /// The certificate of the CA that signed the server's (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.certificates.ca_pem()
    }

    /// The same server on its plain port, for the test to inspect and
    /// tamper with the data.
    pub fn plain(&self) -> &RedisServer {
        &self.server
    }

    /// Stops the server (its ports refuse connections).
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// The settings that make a server take TLS on `tls_port` with
/// `certificates` (clients need not present one).
pub(crate) fn tls_args(tls_port: u16, certificates: &Certificates) -> Vec<String> {
    let file = |path: &Path| path.to_string_lossy().into_owned();
    vec![
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--tls-cert-file".to_owned(),
        file(&certificates.cert_file()),
        "--tls-key-file".to_owned(),
        file(&certificates.key_file()),
        "--tls-ca-cert-file".to_owned(),
        file(&certificates.ca_file()),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
    ]
}
