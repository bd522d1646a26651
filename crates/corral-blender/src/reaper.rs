//! `corral __reaper [--keep-fd N] -- PROGRAM ARGS...`: the small supervisor every Blender
//! runs under, so that nothing Blender (or a wrapper script) starts outlives the node.
//!
//! It starts PROGRAM in a new process group with a parent-death signal, becomes a child
//! subreaper (so a process that leaves the group is handed to it, not to init, when its
//! parent dies), reports Blender's process id as `pid N` on its standard input (a socket
//! whose other end the node holds), and then watches that socket. When the socket closes
//! (the node cancelled the render, dropped its handle, or died, even by SIGKILL) it kills
//! Blender's process group. When Blender exits, for whatever reason, it kills what is left
//! in that group and every process handed to it, reaps them all, and exits as Blender did
//! (same code, or the same signal).
//!
//! Plain std and system calls: no async runtime, no allocation after the fork.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The hidden subcommand the binary dispatches to [`main`].
pub const SUBCOMMAND: &str = "__reaper";

/// Runs the supervisor with the arguments after the subcommand; returns the exit code to
/// exit with (after re-raising Blender's fatal signal, if it died of one).
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut args = args.into_iter();
    let mut keep_fd: Option<i32> = None;
    let program = loop {
        match args.next() {
            Some(arg) if arg == "--keep-fd" => {
                keep_fd = args.next().and_then(|fd| fd.to_str()?.parse().ok());
            }
            Some(arg) if arg == "--" => match args.next() {
                Some(program) => break program,
                None => return usage(),
            },
            _ => return usage(),
        }
    };
    let args: Vec<OsString> = args.collect();

    // Processes whose parent dies below us become our children, so we can kill them.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Re-raising Blender's SIGSEGV below must not leave a core file of the supervisor.
    let _ = nix::sys::prctl::set_dumpable(false);

    let me = nix::unistd::getpid();
    let mut cmd = Command::new(&program);
    cmd.args(&args).stdin(Stdio::null()).process_group(0);
    // SAFETY: runs in the forked child before exec; only async-signal-safe system calls
    // (prctl, getppid), no allocation.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != me {
                return Err(std::io::Error::other(
                    "supervisor exited before Blender started",
                ));
            }
            Ok(())
        });
    }
    let blender = match cmd.spawn() {
        Ok(child) => Pid::from_raw(child.id() as i32),
        Err(e) => {
            eprintln!(
                "Error: corral cannot start `{}`: {e}",
                std::path::Path::new(&program).display()
            );
            return 127;
        }
    };
    // Blender has its own copy of the kept descriptor; ours would only keep the other
    // end from seeing Blender go.
    if let Some(fd) = keep_fd {
        // SAFETY: the node put this descriptor here for Blender; nothing in this process
        // uses it.
        #[allow(unsafe_code)]
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let stdin = std::io::stdin();
    let _ = nix::unistd::write(stdin.as_fd(), format!("pid {blender}\n").as_bytes());

    // `true` once Blender is reaped: from then on its process group id may be reused, so
    // nothing may be sent to it.
    let reaped = Arc::new(Mutex::new(false));
    {
        let reaped = Arc::clone(&reaped);
        std::thread::spawn(move || {
            // Nothing is ever sent on it: a read returns only when the node's end closes.
            let mut sink = [0u8; 64];
            let mut input = std::io::stdin().lock();
            while matches!(input.read(&mut sink), Ok(n) if n > 0) {}
            let reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
            if !*reaped {
                let _ = killpg(blender, Signal::SIGKILL);
            }
        });
    }

    // Wait for Blender to exit without reaping it, so its group id stays reserved while
    // the rest of the group is killed.
    while waitid(
        Id::Pid(blender),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    ) == Err(Errno::EINTR)
    {}
    let status = {
        let mut reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
        let _ = killpg(blender, Signal::SIGKILL);
        let status = loop {
            match waitpid(blender, None) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        *reaped = true;
        status
    };
    kill_and_reap_children(me);
    let _ = std::io::stderr().flush();
    match status {
        Ok(WaitStatus::Exited(_, code)) => code,
        Ok(WaitStatus::Signaled(_, signal, _)) => reraise(signal),
        _ => 1,
    }
}

fn usage() -> i32 {
    eprintln!("usage: corral {SUBCOMMAND} [--keep-fd N] -- PROGRAM [ARGS...]");
    2
}

/// Kills every child (processes handed to us as a subreaper among them) until none is
/// left: killing one may hand us its own children, so this repeats until `waitpid` says
/// there are no children at all.
fn kill_and_reap_children(me: Pid) {
    // Bounded, in case something keeps starting processes faster than they are killed.
    for _ in 0..1000 {
        for child in crate::process::children_of(me.as_raw()) {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return, // ECHILD: nothing left
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Dies of `signal` as Blender did, so the node sees the same end; if that does not kill
/// us, the shell's convention of 128 + signal.
fn reraise(signal: Signal) -> i32 {
    // SAFETY: restores the default action; no handler code is involved.
    #[allow(unsafe_code)]
    let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) };
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(signal);
    let _ = set.thread_unblock();
    let _ = nix::sys::signal::raise(signal);
    128 + signal as i32
}
