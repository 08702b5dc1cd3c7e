//! `sramlm serve`: the OpenAI-compatible HTTP server.

use super::{load_model, RunArgs};
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// Address to listen on (loopback by default: not reachable from other machines)
    #[arg(long, default_value = "127.0.0.1")]
    pub(super) host: String,
    /// Port; 0 picks a free one (printed on stdout)
    #[arg(long, default_value_t = 8080)]
    pub(super) port: u16,
    /// Sequences decoded together (each has its own KV cache of --ctx tokens)
    #[arg(long, default_value_t = 4)]
    pub(super) parallel: usize,
    /// Requests that may wait for a free sequence; more get HTTP 429
    #[arg(long, default_value_t = 16)]
    pub(super) queue: usize,
    /// (--ctx defaults to the model's context window, at most 2048 here;
    /// -n is the default max_tokens of a request)
    #[command(flatten)]
    pub(super) run: RunArgs,
}

pub(super) fn run(a: ServeArgs) -> Result<()> {
    if a.parallel == 0 || a.parallel > sramlm::kernels::attention::MAX_ROWS {
        bail!(
            "--parallel must be between 1 and {}",
            sramlm::kernels::attention::MAX_ROWS
        );
    }
    if a.queue == 0 {
        bail!("--queue must be at least 1");
    }
    if a.run.max_tokens == 0 {
        bail!("-n/--max-tokens must be at least 1");
    }
    let mut run = a.run.clone();
    if run.ctx.is_none() {
        // One KV cache per sequence: keep the default modest.
        let m = load_model(run.model.as_ref())?;
        run.ctx = Some(m.config.max_position_embeddings.min(2048));
    }
    let parallel = a.parallel;
    let opts = sramlm::serve::ServeOptions {
        host: a.host,
        port: a.port,
        queue: a.queue,
        default_max_tokens: run.max_tokens,
    };
    sramlm::serve::serve(opts, move || {
        let s = run.session_for(parallel, None)?;
        Ok((s.m, s.exec))
    })
}
