//! `alb`: one binary for the alb-rs gateway. See README.md and `alb --help`.

mod admin;
mod cli;
mod compile;
mod controller;
mod crd;
mod echo;
mod hashing;
mod ingress;
mod manifests;
mod metrics;
mod nginx;
mod operator;
mod policy;
mod standalone;
mod tls;

use anyhow::Result;
use clap::Parser;

/// mimalloc instead of glibc's malloc: compiling a policy allocates and frees many small objects, and glibc's
/// malloc (with its free-chunk consolidation) took ~45 % of a 10,000-rule compile (perf, `alb policy --time`).
/// glibc's also left the controller a larger peak RSS at 10,000 Ingresses (246.8 against 191.5 MiB, same code).
/// The feature `system-alloc` keeps glibc's, for heap profilers that hook malloc (`e2e/bench/heapprof`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`'s place in mimalloc 3's `mi_option_t` (the Rust binding has no name for it; a test
/// below checks it against the option's default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// `mi_option_allow_thp`'s place in mimalloc 3's `mi_option_t` (checked by a test like the one above).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// mimalloc 3 gives memory back to the OS 1 s after it became free (`purge_delay` 1,000 ms). A compilation frees
/// tens of MiB at once and the next one follows within a second when objects keep changing, so the controller's
/// RSS carried memory it no longer used: e2e/bench/scale (10,000 Ingresses) measured VmHWM 266 and 261 MiB with
/// the default against 223 and 221 MiB with purging at once, compile times the same within noise. Purge at
/// once, unless `MIMALLOC_PURGE_DELAY` is set (mimalloc reads it).
///
/// Transparent huge pages are off for this process, unless `MIMALLOC_ALLOW_THP` is set. mimalloc 3 asks for them
/// (`madvise(MADV_HUGEPAGE)`) on the regions it maps, so with the kernel's THP on (`always` or `madvise`) a partly
/// used 2 MiB region was resident whole. e2e/bench/scale (10,000 Ingresses, 10 changes, same hour): VmHWM 176.7
/// MiB with them against 155.9 MiB with `MIMALLOC_ALLOW_THP=0` and 158.1 MiB with the setting below, compile
/// times the same within noise.
/// The option alone stops the `madvise` on new regions; `PR_SET_THP_DISABLE` (what mimalloc itself does when the
/// variable is set at its start, before `main`) also covers the regions mapped before. nginx, when alb spawns it
/// (`controller --spawn-nginx`, `standalone`), inherits the flag; it asks for no huge pages itself, so with the
/// kernel's `madvise` mode that changes nothing for it.
fn allocator_options() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator; mimalloc allows this at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
            eprintln!("alb: could not turn transparent huge pages off for this process: {e}");
        }
    }
}

fn main() -> std::process::ExitCode {
    allocator_options();
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ALB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: cli::Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(cli::dispatch(args))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_at_the_index_we_set() {
        // mimalloc 3's default purge delay is 1,000 ms (no unit test sets it; MIMALLOC_PURGE_DELAY would)
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one integer option of the allocator.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, 1000, "option {} is not mimalloc's purge_delay", super::MI_OPTION_PURGE_DELAY);
    }

    #[test]
    fn the_allow_thp_option_is_at_the_index_we_set() {
        if ["MIMALLOC_ALLOW_THP", "MIMALLOC_MINIMAL_PURGE_SIZE", "MIMALLOC_PAGE_CROSS_THREAD_MAX_RECLAIM"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return;
        }
        // The defaults around it tell the place: page_cross_thread_max_reclaim (a build constant, 32 here) before
        // it, allow_thp 1, minimal_purge_size 0 after it. SAFETY: reads integer options of the allocator.
        let at = |i| unsafe { libmimalloc_sys::mi_option_get(i) };
        let i = super::MI_OPTION_ALLOW_THP;
        assert!(at(i - 1) > 1 && (at(i), at(i + 1)) == (1, 0), "option {i} is not mimalloc's allow_thp");
    }
}
