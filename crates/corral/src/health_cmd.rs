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
    let cert = args.data.join("tls").join(corral_http::tls::CERT_FILE);
    let (scheme, pins) = if cert.is_file() {
        let fp = corral_http::tls::certificate_fingerprint(&cert)?;
        ("https", Pins(vec![fp]))
    } else {
        ("http", Pins::none())
    };
    let http = corral_client::http_client_pinned(&pins)?;
    let url = format!("{scheme}://127.0.0.1:{port}{}", args.path);
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(4))
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    if resp.status() != reqwest::StatusCode::OK {
        bail!("{url} answered {}", resp.status());
    }
    Ok(ExitCode::SUCCESS)
}
