// mimalloc rather than the system allocator: events are allocated on one thread and freed on
// another, where glibc's malloc spent more time than the replicator's own code (perf, end-to-end
// benchmark; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    replicator::cli::main()
}
