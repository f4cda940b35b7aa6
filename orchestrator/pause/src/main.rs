//! `skiff-pause`: the first process of every Docker pod sandbox. It holds the pod's network and
//! IPC namespaces for the app containers that join them, reaps any orphaned children, and exits
//! cleanly on SIGTERM or SIGINT (PID 1 gets no default signal handlers, so it must wait for them
//! itself).

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

fn main() {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("pause: blocking signals: {e}");
        std::process::exit(1);
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                // Reap every exited child, not just one: signals coalesce.
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status.pid().is_none() {
                        break;
                    }
                }
            }
            Ok(_) => std::process::exit(0),
            Err(e) => {
                eprintln!("pause: waiting for signals: {e}");
                std::process::exit(1);
            }
        }
    }
}
