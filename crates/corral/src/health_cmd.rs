//! `corral healthcheck`: the containers' health probe. It asks the server in this
//! container (the port of CORRAL_LISTEN, on loopback) for a path and succeeds on `200`;
//! over HTTPS, pinned to the server's own certificate in CORRAL_DATA/tls, when the server
//! made one (a shell's /dev/tcp, used before, cannot speak TLS).

use anyhow::{bail, Context};
use clap::Args;
use corral_client::Pins;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The path that must answer 200.
    #[arg(default_value = "/healthz")]
    path: String,
    /// The server's listen address; only its port is used.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "0.0.0.0:3000")]
    listen: String,
    /// The server's data folder, where a certificate it made is (tls/cert.pem).
    #[arg(long, env = "CORRAL_DATA", default_value = "corral-data/node")]
    data: PathBuf,
    /// The certificate the server was given instead (the orchestrator's --tls-cert).
    #[arg(long, env = "CORRAL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The server serves plain HTTP whatever its data folder holds.
    #[arg(long, env = "CORRAL_NO_TLS")]
    no_tls: bool,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    if !args.path.starts_with('/') {
        bail!("the path must start with /");
    }
    let port: u16 = args
        .listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("`{}` names no port", args.listen))?;
    let cert = args
        .tls_cert
        .clone()
        .unwrap_or_else(|| args.data.join("tls").join(corral_http::tls::CERT_FILE));
    // Its own certificate first when it has one; then plain HTTP (a certificate left by
    // an earlier start of a server that no longer serves TLS).
    let mut tries = Vec::new();
    if !args.no_tls && cert.is_file() {
        let fp = corral_http::tls::certificate_fingerprint(&cert)?;
        tries.push(("https", Pins(vec![fp])));
    }
    tries.push(("http", Pins::none()));
    let mut failure = None;
    for (scheme, pins) in tries {
        let http = corral_client::http_client_pinned(&pins)?;
        let url = format!("{scheme}://127.0.0.1:{port}{}", args.path);
        match http.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(resp) if resp.status() == reqwest::StatusCode::OK => return Ok(ExitCode::SUCCESS),
            Ok(resp) => failure = Some(format!("{url} answered {}", resp.status())),
            Err(e) => {
                failure = Some(format!(
                    "{url} did not answer: {}",
                    corral_client::transport_cause(&e)
                ))
            }
        }
    }
    bail!("{}", failure.unwrap_or_default())
}
