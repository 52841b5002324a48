//! The xenbus device state machine (`public/io/xenbus.h`): the `state` node of a split device's frontend and
//! backend directories in xenstore.

/// `enum xenbus_state` values, as written (in decimal) to a device directory's `state` node.
pub mod state {
    pub const UNKNOWN: u32 = 0;
    pub const INITIALISING: u32 = 1;
    pub const INIT_WAIT: u32 = 2;
    pub const INITIALISED: u32 = 3;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
    pub const CLOSED: u32 = 6;
    pub const RECONFIGURING: u32 = 7;
    pub const RECONFIGURED: u32 = 8;
}
