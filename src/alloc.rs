//! The binary's allocator (part of the `imgedge` binary, not the library): mimalloc as the
//! global allocator, its purge delay, and the hooks through which the library hands memory
//! back and turns transparent huge pages off while idle (`imgedge::memory`). The only
//! `unsafe` outside `imaging/webp_anim.rs`: calls into mimalloc and `prctl`.

// mimalloc: lower fragmentation than glibc malloc for many short-lived, large image
// buffers allocated on different threads, which keeps RSS flat under load. With the
// `override` feature of libmimalloc-sys (Cargo.toml) it serves the C codecs' malloc too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (its option enum keeps retired entries, so the
/// numbers stay put; libmimalloc-sys names only the v2 ones).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before handing it back to the OS, in milliseconds.
/// A render frees large buffers (a progressive JPEG's coefficients: about 50 MB for a 16 MP
/// file) that the next render on the same CPU thread needs again 100-200 ms later. Kept,
/// they are reused; handed back at once, every render pays page faults and zeroing for
/// them. Kept too long, buffers of different sizes pile up between reuses.
///
/// Measured with the CPU pool on its own threads and no originals cache for the fs backend
/// (the defaults), 60 s of W1 at 8 connections and 20 s of W3 at 4 (issue 5):
///
/// | delay | W1 CPU-ms/req | W1 peak RSS | W3 CPU-ms/req |
/// |---|---|---|---|
/// | 0 | 39.3 | 192 MB | 32.4 |
/// | 250 | 32.5-33.2 | 274 MB | 28.8 |
/// | 500 | 32.2 | 308 MB | 28.3 |
/// | 1000 (mimalloc's default) | 31.2 | 306 MB (345 MB in a 10-minute soak) | 27.7 |
///
/// 250 ms keeps most of the CPU saving and stays well inside the W1 memory target (0.25x
/// sharp's 1.2-1.3 GB). `MIMALLOC_PURGE_DELAY` in the environment still decides.
const PURGE_DELAY_MS: std::ffi::c_long = 250;

// mimalloc's own variables, which decide over our defaults; not imgedge settings.
#[allow(clippy::disallowed_methods)]
pub(crate) fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option table; it is
        // thread-safe and may be called at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // The purge delay only runs out inside later allocations and frees; a quiet process
    // would keep its peak for good. The library calls this on each worker thread once the
    // heavy work has gone quiet (`imgedge::memory`).
    let huge_pages = std::env::var_os("MIMALLOC_ALLOW_THP").is_none();
    imgedge::memory::set_hooks(imgedge::memory::Hooks {
        release: release_memory,
        settle: if huge_pages { huge_pages_off } else { || {} },
        resume: if huge_pages { huge_pages_on } else { || {} },
    });
}

/// Transparent huge pages, while idle: off.
///
/// mimalloc marks its arenas `MADV_HUGEPAGE`. The kernel's khugepaged then, every 10 s,
/// collapses any 2 MiB stretch of an arena that still has one page in use back into a
/// whole huge page, faulting in again what [`release_memory`] handed back: an idle server
/// after a W1 run grew from 49 to 62 MB of anonymous memory in 80 s (42 to 79 MB in 140 s
/// in another run), in steps 10 s apart, all of it `AnonHugePages` in mimalloc's arena
/// (/proc/PID/smaps); with huge pages off it stayed at 9-10 MB. But under load they save
/// CPU: W1 at 8 connections, three interleaved 20 s runs each, 36.0 CPU-ms/req with them
/// against 40.1 without. So they are on for work and off in between (`imgedge::memory`
/// calls these two). `MIMALLOC_ALLOW_THP` set in the environment leaves them alone.
fn huge_pages_off() {
    set_huge_pages(false);
}

fn huge_pages_on() {
    set_huge_pages(true);
}

fn set_huge_pages(on: bool) {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and changes nothing
    // but this process's huge-page policy. A kernel without THP refuses it, and then there
    // is nothing to switch.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(!on), 0, 0, 0) };
}

/// Collects the calling thread's heap and purges every freed page process-wide now.
fn release_memory() {
    // SAFETY: mi_collect(true) only frees memory mimalloc itself holds unused; it is safe
    // to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
