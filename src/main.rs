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

/// jemalloc instead of glibc's malloc. Compiling a policy allocates and frees many small objects: glibc's malloc
/// (with its free-chunk consolidation) took ~45 % of a 10,000-rule compile (perf, `alb policy --time`), and its
/// per-thread arenas left the controller the largest peak RSS at 10,000 Ingresses (`e2e/bench/scale`, 10
/// changes, release builds, same hour: VmHWM 110.3 MiB with glibc's, 87.3 and 86.9 with mimalloc 3 purging at
/// once, 81.3 and 81.5 with jemalloc returning freed pages at once, compile times the same within noise).
/// The feature `system-alloc` keeps glibc's, for heap profilers that hook malloc (`e2e/bench/heapprof`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (its `malloc_conf`, under the crate's `_rjem_` prefix;
/// `_RJEM_MALLOC_CONF` in the environment is read after it and overrides). Freed pages go back to the OS at once
/// instead of after jemalloc's 10 s decay: a compilation frees tens of MiB at once and the next one follows
/// within a second when objects keep changing (with the default decay: VmHWM 89.7 MiB in the runs above).
/// One arena for all threads instead of 4 per CPU: the tokio workers and the compile's blocking thread otherwise
/// each keep partly used pages of their own (VmHWM 73.4 against 74.8 and 74.3 MiB, `dist` build, same hour;
/// compile 33.4 against 33.1 and 33.3 ms: the controller allocates from few threads at once).
#[cfg(not(feature = "system-alloc"))]
#[used]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &[u8; 44] = b"dirty_decay_ms:0,muzzy_decay_ms:0,narenas:1\0";

/// Transparent huge pages are off for this process, unless `ALB_ALLOW_THP` is set: with the kernel's THP in
/// `always` mode a partly used 2 MiB region is resident whole (with mimalloc, which asked for huge pages, 15-19
/// MiB more peak RSS at 10,000 Ingresses). nginx, when alb spawns it (`controller --spawn-nginx`, `standalone`),
/// inherits the flag; it asks for no huge pages itself, so with the kernel's `madvise` mode that changes nothing
/// for it.
fn transparent_huge_pages_off() {
    if std::env::var_os("ALB_ALLOW_THP").is_none() {
        if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
            eprintln!("alb: could not turn transparent huge pages off for this process: {e}");
        }
    }
}

fn main() -> std::process::ExitCode {
    transparent_huge_pages_off();
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
    end_on_panic();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A panic ends the process, whichever thread it happens in: the panic's message is printed as usual, the nginx
/// this process started is stopped, and the process aborts (the shipped `dist` build is also compiled with
/// `panic = "abort"`, Cargo.toml). With unwinding, a panicking tokio task would end alone and leave the others
/// running without it (a leader that no longer syncs Ingresses, say); ended, the process is restarted by its
/// supervisor, and another replica takes the Lease when it expires.
fn end_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        nginx::process::stop_spawned_at_once();
        std::process::abort();
    }));
}

fn run(args: cli::Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(cli::dispatch(args))
}

#[cfg(test)]
mod tests {
    /// jemalloc read our `malloc_conf` (the symbol took): its options are what the string says.
    #[cfg(not(feature = "system-alloc"))]
    #[test]
    fn jemalloc_took_our_options() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return;
        }
        for name in [&b"opt.dirty_decay_ms\0"[..], &b"opt.muzzy_decay_ms\0"[..]] {
            let mut v: isize = -2;
            let mut len = std::mem::size_of::<isize>();
            // SAFETY: reads one ssize_t option into `v`; `len` is its size, the name is NUL-terminated.
            let rc = unsafe {
                tikv_jemalloc_sys::mallctl(
                    name.as_ptr().cast(),
                    (&mut v as *mut isize).cast(),
                    &mut len,
                    std::ptr::null_mut(),
                    0,
                )
            };
            assert_eq!((rc, v), (0, 0), "{}", String::from_utf8_lossy(name));
        }
        let mut arenas: u32 = 0;
        let mut len = std::mem::size_of::<u32>();
        // SAFETY: reads the unsigned option `opt.narenas` into `arenas`; `len` is its size.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"opt.narenas".as_ptr(),
                (&mut arenas as *mut u32).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!((rc, arenas), (0, 1), "opt.narenas");
    }
}
