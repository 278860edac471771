//! The moto server standing in for Route53: a hosted zone with a weighted record per region
//! and an HTTP health check per region.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub const ZONE: &str = "example.com";
pub const RECORD: &str = "orchestrator.example.com";

pub struct Moto {
    pub port: u16,
    pub zone_id: String,
    pub health_check_ids: Vec<(String, String)>,
    pub pid: i32,
    child: Option<Child>,
}

/// Where moto_server is: $RUNBOOK_MOTO_SERVER, ./.venv/bin/moto_server, or on PATH.
pub fn find_server(hint: Option<&Path>) -> PathBuf {
    if let Some(p) = hint.filter(|p| p.exists()) {
        return p.to_path_buf();
    }
    if let Ok(p) = std::env::var("RUNBOOK_MOTO_SERVER") {
        return p.into();
    }
    let venv = PathBuf::from(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    "moto_server".into()
}

impl Moto {
    /// Starts moto on a free loopback port and creates the zone, one weighted A record per
    /// region (the first region gets `weights[0]`, ...) and a health check per region.
    pub fn start(
        dir: &Path,
        server: &Path,
        regions: &[&str],
        weights: &[i64],
    ) -> std::io::Result<Moto> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("moto.log"))?;
        // It runs in its own folder (what it writes lands there, and a process left behind
        // shows whose it is); a path to it is read from here, a bare name from PATH.
        let server = match std::fs::canonicalize(server) {
            Ok(path) if server.components().count() > 1 => path,
            _ => server.to_path_buf(),
        };
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
            .process_group(0)
            .spawn()
            .map_err(|e| {
                std::io::Error::other(format!(
                    "cannot start {}: {e} (run scripts/setup)",
                    server.display()
                ))
            })?;
        let pid = child.id() as i32;
        let mut moto = Moto {
            port,
            zone_id: String::new(),
            health_check_ids: Vec::new(),
            pid,
            child: Some(child),
        };
        wait_until(Duration::from_secs(30), "the moto server", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        // The port answered: make sure it is our server and not one that took the port first.
        std::thread::sleep(Duration::from_millis(100));
        if let Some(Ok(Some(status))) = moto.child.as_mut().map(|c| c.try_wait()) {
            return Err(std::io::Error::other(format!(
                "moto_server exited ({status}); see {}",
                dir.join("moto.log").display()
            )));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(moto.seed(regions, weights))
            .map_err(std::io::Error::other)?;
        Ok(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A Route53 client for this server, with dummy credentials.
    pub async fn client(&self) -> aws_sdk_route53::Client {
        let config = aws_sdk_route53::Config::builder()
            .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_route53::config::Credentials::new(
                "testing", "testing", None, None, "stack",
            ))
            .http_client({
                use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
                aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::Ring))
                    .build_https()
            })
            .build();
        aws_sdk_route53::Client::from_conf(config)
    }

    async fn seed(&mut self, regions: &[&str], weights: &[i64]) -> Result<(), String> {
        use aws_sdk_route53::types::*;
        let c = self.client().await;
        let zone = c
            .create_hosted_zone()
            .name(ZONE)
            .caller_reference(format!("runbook-stack-{}", self.port))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "create zone: {}",
                    aws_sdk_route53::error::DisplayErrorContext(e)
                )
            })?;
        self.zone_id = zone
            .hosted_zone()
            .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
            .unwrap_or_default();
        let mut changes = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            let hc = c
                .create_health_check()
                .caller_reference(format!("hc-{region}-{}", self.port))
                .health_check_config(
                    HealthCheckConfig::builder()
                        .r#type(HealthCheckType::Http)
                        .fully_qualified_domain_name(format!("{region}-lb.{ZONE}"))
                        .port(80)
                        .resource_path("/health")
                        .build()
                        .map_err(|e| e.to_string())?,
                )
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "create health check: {}",
                        aws_sdk_route53::error::DisplayErrorContext(e)
                    )
                })?;
            let hc_id = hc
                .health_check()
                .map(|h| h.id().to_string())
                .unwrap_or_default();
            self.health_check_ids
                .push((region.to_string(), hc_id.clone()));
            let rrset = ResourceRecordSet::builder()
                .name(format!("{RECORD}."))
                .r#type(RrType::A)
                .set_identifier(*region)
                .weight(weights.get(i).copied().unwrap_or(0))
                .ttl(60)
                .resource_records(
                    ResourceRecord::builder()
                        .value(format!("127.0.0.{}", i + 10))
                        .build()
                        .map_err(|e| e.to_string())?,
                )
                .health_check_id(hc_id)
                .build()
                .map_err(|e| e.to_string())?;
            changes.push(
                Change::builder()
                    .action(ChangeAction::Create)
                    .resource_record_set(rrset)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        c.change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(
                ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| {
                format!(
                    "create records: {}",
                    aws_sdk_route53::error::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    /// Every record set of the zone, read with the AWS SDK.
    pub fn records(&self) -> Vec<aws_sdk_route53::types::ResourceRecordSet> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let out = self
                .client()
                .await
                .list_resource_record_sets()
                .hosted_zone_id(&self.zone_id)
                .send()
                .await;
            out.expect("list records").resource_record_sets().to_vec()
        })
    }

    /// Weight per set identifier of the stack's record.
    pub fn weights(&self) -> Vec<(String, i64)> {
        let mut w: Vec<(String, i64)> = self
            .records()
            .iter()
            .filter(|r| r.name() == format!("{RECORD}."))
            .filter_map(|r| Some((r.set_identifier()?.to_string(), r.weight()?)))
            .collect();
        w.sort();
        w
    }

    /// Every record of the zone as text, to compare states.
    pub fn snapshot(&self) -> String {
        format!("{:?}", self.records())
    }

    pub fn stop(&mut self) {
        let port = self.port;
        super::stop_pid(self.pid, libc::SIGTERM, Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
