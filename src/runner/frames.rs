//! The step scope of the current thread: where in the step tree the script is, and the
//! ordinal of the next call there. Each `parallel` branch runs on its own thread with its own
//! stack, so identities never depend on scheduling.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Instant;

use crate::journal::StepPath;

pub struct Frame {
    pub path: StepPath,
    pub next_seq: u32,
    pub names: HashSet<String>,
    pub parallels: u32,
    pub deadline: Option<Instant>,
    /// This step finished in an earlier session: its calls replay.
    pub replayed: bool,
}

impl Frame {
    pub fn new(path: StepPath, deadline: Option<Instant>, replayed: bool) -> Frame {
        Frame {
            path,
            next_seq: 0,
            names: HashSet::new(),
            parallels: 0,
            deadline,
            replayed,
        }
    }
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = RefCell::new(vec![Frame::new(Vec::new(), None, false)]);
}

/// Starts this thread at `root` (a new run, or a parallel branch).
pub fn reset(root: Frame) {
    FRAMES.with(|f| *f.borrow_mut() = vec![root]);
}

pub fn push(frame: Frame) {
    FRAMES.with(|f| f.borrow_mut().push(frame));
}

pub fn pop() {
    FRAMES.with(|f| {
        f.borrow_mut().pop();
    });
}

pub fn with_top<R>(op: impl FnOnce(&mut Frame) -> R) -> R {
    FRAMES.with(|f| {
        op(f.borrow_mut()
            .last_mut()
            .expect("the root frame is never popped"))
    })
}

/// The identity of the next call: the current step path and its ordinal there.
pub fn next_call() -> (StepPath, u32) {
    with_top(|top| {
        top.next_seq += 1;
        (top.path.clone(), top.next_seq)
    })
}

pub fn current_path() -> StepPath {
    with_top(|top| top.path.clone())
}

/// The nearest step deadline, if any step on the stack has a timeout.
pub fn deadline() -> Option<Instant> {
    FRAMES.with(|f| f.borrow().iter().filter_map(|fr| fr.deadline).min())
}

pub fn in_replayed_step() -> bool {
    with_top(|top| top.replayed)
}

thread_local! {
    /// The module (source file) of the call being served, when it is not the runbook itself.
    static SOURCE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Notes which source the current native call comes from (for error positions).
pub fn set_source(source: Option<&str>) {
    SOURCE.with(|s| *s.borrow_mut() = source.map(str::to_string));
}

pub fn source() -> Option<String> {
    SOURCE.with(|s| s.borrow().clone())
}
