//! The process's own heap. glibc's allocator keeps memory freed by a burst of work (a bootstrap unpacks
//! and hashes ~100 MB of artifacts; every pass builds plans and HTTP clients) in its arenas for reuse, so a
//! long-running daemon would sit on its peak. Two things keep it small: one malloc arena for the whole
//! process (glibc otherwise gives each thread that allocates its own; the blocking threads of a bootstrap
//! left 7 of them holding 22 MiB that `malloc_trim` did not return, measured on a sandbox bootstrap; with
//! one arena the idle agent held 1.5 MiB of anonymous memory), and handing free memory back after each
//! pass.

/// Return the free memory of every malloc arena to the kernel (`malloc_trim(0)`). Cheap (microseconds
/// on a small heap); a no-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer from us and only walks glibc's own heap structures, under
    // glibc's arena locks; it is documented as safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Use one malloc arena for the whole process (`mallopt(M_ARENA_MAX, 1)`). Call it first thing in `main`,
/// before any thread starts. The agent's threads allocate little at the same time (hashing and unpacking
/// stream through fixed buffers), so sharing one arena costs nothing measurable.
pub fn single_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only changes glibc's allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
