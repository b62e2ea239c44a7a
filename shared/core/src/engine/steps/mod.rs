//! Starting each kind of step, and the events that belong to one kind.

pub(super) mod child;
pub(super) mod delay;
pub(super) mod fan;
pub(super) mod http;
pub(super) mod pure;
pub(super) mod waits;

/// What starting a step leaves the loop in [`super::advance::advance`] to do.
pub(super) enum Then {
    /// The step is done and the cursor is past it: go on with the next.
    Next,
    /// The step needs the outside world (an effect is out), or the run ended: stop here.
    Stop,
}
