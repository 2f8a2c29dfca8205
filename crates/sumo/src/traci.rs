//! A small TraCI client: SUMO's remote-control protocol over TCP, spoken from Rust.
//!
//! Framing (big-endian throughout): a message is a 4-byte total length (counting itself) and
//! a sequence of commands; a command is a 1-byte length (counting the length byte and the
//! command id) and a 1-byte id, or, when longer than 255 bytes, a 0 byte, a 4-byte length
//! (counting these 5 bytes and the id) and the id, followed by the command's content. The
//! answer carries, per command in order, a status (result byte 0 = ok, and a message) and any
//! result the command produces; a simulation step's result is the subscription results of that
//! step. One step of a world is therefore one round trip: move the ego, step, read every
//! subscribed value.
//!
//! Only what the SUMO world needs is here: version, set order, simulation step, vehicle and
//! route add, moveToXY, speed and lane-change modes, the driver model's acceleration,
//! deceleration, minimum gap, imperfection and speed factor, remove, variable and context
//! subscriptions, and plain variable gets. Typed values are read without allocation
//! ([`Value`] borrows its strings from the answer).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Command ids (TraCI constants).
pub mod cmd {
    pub const GET_VERSION: u8 = 0x00;
    pub const SIMULATION_STEP: u8 = 0x02;
    pub const SET_ORDER: u8 = 0x03;
    pub const CLOSE: u8 = 0x7f;
    pub const SUBSCRIBE_VEHICLE_CONTEXT: u8 = 0x84;
    pub const RESPONSE_SUBSCRIBE_VEHICLE_CONTEXT: u8 = 0x94;
    pub const GET_VEHICLE_VARIABLE: u8 = 0xa4;
    pub const RESPONSE_GET_VEHICLE_VARIABLE: u8 = 0xb4;
    pub const GET_SIM_VARIABLE: u8 = 0xab;
    pub const RESPONSE_GET_SIM_VARIABLE: u8 = 0xbb;
    pub const SET_VEHICLE_VARIABLE: u8 = 0xc4;
    pub const SET_ROUTE_VARIABLE: u8 = 0xc6;
    pub const SUBSCRIBE_VEHICLE_VARIABLE: u8 = 0xd4;
    pub const RESPONSE_SUBSCRIBE_VEHICLE_VARIABLE: u8 = 0xe4;
}

/// Variable ids (TraCI constants).
pub mod var {
    pub const ID_LIST: u8 = 0x00;
    pub const SPEED: u8 = 0x40;
    pub const POSITION: u8 = 0x42;
    pub const ANGLE: u8 = 0x43;
    pub const LENGTH: u8 = 0x44;
    pub const ACCEL: u8 = 0x46;
    pub const DECEL: u8 = 0x47;
    pub const MIN_GAP: u8 = 0x4c;
    pub const WIDTH: u8 = 0x4d;
    pub const LANE_ID: u8 = 0x51;
    pub const NEXT_TLS: u8 = 0x70;
    pub const IMPERFECTION: u8 = 0x5d;
    pub const SPEED_FACTOR: u8 = 0x5e;
    pub const ACCELERATION: u8 = 0x72;
    pub const TIME: u8 = 0x66;
    pub const ADD: u8 = 0x80;
    pub const REMOVE: u8 = 0x81;
    pub const ADD_FULL: u8 = 0x85;
    pub const SPEED_MODE: u8 = 0xb3;
    pub const MOVE_TO_XY: u8 = 0xb4;
    pub const LANE_CHANGE_MODE: u8 = 0xb6;
}

/// Value type tags.
pub mod ty {
    pub const POSITION_2D: u8 = 0x01;
    pub const UBYTE: u8 = 0x07;
    pub const BYTE: u8 = 0x08;
    pub const INTEGER: u8 = 0x09;
    pub const DOUBLE: u8 = 0x0b;
    pub const STRING: u8 = 0x0c;
    pub const STRING_LIST: u8 = 0x0e;
    pub const COMPOUND: u8 = 0x0f;
}

/// What can go wrong talking to SUMO.
#[derive(Debug, thiserror::Error)]
pub enum TraciError {
    /// The socket failed.
    #[error("TraCI connection: {0}")]
    Io(#[from] io::Error),
    /// SUMO did not answer within the read timeout (hung or stopped).
    #[error("SUMO did not answer within {0:?}")]
    Timeout(Duration),
    /// SUMO closed the connection (the process ended).
    #[error("TraCI connection closed by SUMO")]
    Closed,
    /// SUMO refused a command.
    #[error("SUMO refused TraCI command 0x{command:02x}: {message}")]
    Refused { command: u8, message: String },
    /// The answer does not follow the protocol.
    #[error("TraCI protocol: {0}")]
    Protocol(String),
}

impl TraciError {
    /// Whether SUMO stopped answering in time (the read timeout elapsed).
    pub fn is_timeout(&self) -> bool {
        matches!(self, TraciError::Timeout(_))
    }
}

/// A typed TraCI value read from an answer; strings borrow from it. Compounds and string
/// lists give their item count: the items follow in the answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Position(f64, f64),
    UByte(u8),
    Byte(i8),
    Int(i32),
    Double(f64),
    Str(&'a str),
    StringList(usize),
    Compound(usize),
}

/// A request of one or more commands, sent as one message.
#[derive(Clone, Debug, Default)]
pub struct Request {
    bytes: Vec<u8>,
    content: Vec<u8>,
    ids: Vec<u8>,
}

impl Request {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ids.clear();
    }

    /// The commands' ids, in order (what the answer's statuses must name).
    pub fn ids(&self) -> &[u8] {
        &self.ids
    }

    /// The encoded message: length prefix and commands.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.bytes.len() + 4);
        m.extend_from_slice(&((self.bytes.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(&self.bytes);
        m
    }

    /// Appends command `id` whose content the closure writes.
    pub(crate) fn command(&mut self, id: u8, write: impl FnOnce(&mut Vec<u8>)) {
        let mut c = std::mem::take(&mut self.content);
        c.clear();
        write(&mut c);
        let len = c.len() + 2;
        if len <= 255 {
            self.bytes.push(len as u8);
        } else {
            self.bytes.push(0);
            self.bytes
                .extend_from_slice(&((len + 4) as u32).to_be_bytes());
        }
        self.bytes.push(id);
        self.bytes.extend_from_slice(&c);
        self.ids.push(id);
        self.content = c;
    }

    pub fn get_version(&mut self) -> &mut Self {
        self.command(cmd::GET_VERSION, |_| {});
        self
    }

    /// Fixes this client's execution order among several (SUMO asks every client for one).
    pub fn set_order(&mut self, order: i32) -> &mut Self {
        self.command(cmd::SET_ORDER, |c| {
            c.extend_from_slice(&order.to_be_bytes())
        });
        self
    }

    /// Advances the simulation to `target` seconds (0: exactly one step).
    pub fn simulation_step(&mut self, target: f64) -> &mut Self {
        self.command(cmd::SIMULATION_STEP, |c| put_f64(c, target));
        self
    }

    pub fn close(&mut self) -> &mut Self {
        self.command(cmd::CLOSE, |_| {});
        self
    }

    /// Reads variable `variable` of object `object` in a get domain (e.g. 0xa4 vehicles).
    pub fn get(&mut self, domain: u8, variable: u8, object: &str) -> &mut Self {
        self.command(domain, |c| {
            c.push(variable);
            put_str(c, object);
        });
        self
    }

    /// Adds a route of edge ids.
    pub fn add_route(&mut self, route: &str, edges: &[&str]) -> &mut Self {
        self.command(cmd::SET_ROUTE_VARIABLE, |c| {
            c.push(var::ADD);
            put_str(c, route);
            c.push(ty::STRING_LIST);
            c.extend_from_slice(&(edges.len() as i32).to_be_bytes());
            for e in edges {
                put_str(c, e);
            }
        });
        self
    }

    /// Adds a vehicle on `route` departing now at `depart_pos` metres into the route's first
    /// edge on lane `depart_lane`, at `depart_speed` m/s (SUMO's departure strings).
    pub fn add_vehicle(&mut self, vehicle: &str, route: &str, depart: &Departure) -> &mut Self {
        self.command(cmd::SET_VEHICLE_VARIABLE, |c| {
            c.push(var::ADD_FULL);
            put_str(c, vehicle);
            put_compound(c, 14);
            for s in [
                route,
                &depart.vehicle_type,
                "now",
                &depart.lane,
                &depart.pos,
                &depart.speed,
                "current",
                "max",
                "current",
                "",
                "",
                "",
            ] {
                put_typed_str(c, s);
            }
            put_typed_i32(c, 0);
            put_typed_i32(c, 0);
        });
        self
    }

    /// Places a vehicle at (x, y) (its front bumper, SUMO's vehicle position) with `angle`
    /// (degrees, clockwise from north); `keep_route` 1 maps it onto its route's lanes.
    pub fn move_to_xy(&mut self, vehicle: &str, pose: &XyPose) -> &mut Self {
        self.command(cmd::SET_VEHICLE_VARIABLE, |c| {
            c.push(var::MOVE_TO_XY);
            put_str(c, vehicle);
            put_compound(c, 7);
            put_typed_str(c, "");
            put_typed_i32(c, -1);
            put_typed_f64(c, pose.x);
            put_typed_f64(c, pose.y);
            put_typed_f64(c, pose.angle);
            c.push(ty::BYTE);
            c.push(pose.keep_route as u8);
            put_typed_f64(c, pose.match_threshold);
        });
        self
    }

    /// Sets an integer vehicle variable (speed mode, lane-change mode).
    pub fn set_vehicle_int(&mut self, vehicle: &str, variable: u8, value: i32) -> &mut Self {
        self.command(cmd::SET_VEHICLE_VARIABLE, |c| {
            c.push(variable);
            put_str(c, vehicle);
            put_typed_i32(c, value);
        });
        self
    }

    /// Sets a floating-point vehicle variable (acceleration, deceleration, minimum gap,
    /// imperfection, speed factor).
    pub fn set_vehicle_double(&mut self, vehicle: &str, variable: u8, value: f64) -> &mut Self {
        self.command(cmd::SET_VEHICLE_VARIABLE, |c| {
            c.push(variable);
            put_str(c, vehicle);
            put_typed_f64(c, value);
        });
        self
    }

    /// Removes a vehicle (reason 2 = vaporized, SUMO's REMOVE_VAPORIZED).
    pub fn remove_vehicle(&mut self, vehicle: &str) -> &mut Self {
        self.command(cmd::SET_VEHICLE_VARIABLE, |c| {
            c.push(var::REMOVE);
            put_str(c, vehicle);
            c.push(ty::BYTE);
            c.push(2);
        });
        self
    }

    /// Subscribes to variables of one vehicle for the whole simulation: each step's answer
    /// carries them.
    pub fn subscribe_vehicle(&mut self, vehicle: &str, variables: &[u8]) -> &mut Self {
        self.command(cmd::SUBSCRIBE_VEHICLE_VARIABLE, |c| {
            put_f64(c, 0.0);
            put_f64(c, 1e9);
            put_str(c, vehicle);
            c.push(variables.len() as u8);
            c.extend_from_slice(variables);
        });
        self
    }

    /// Subscribes to variables of every vehicle within `range` metres of `vehicle`.
    pub fn subscribe_vehicle_context(
        &mut self,
        vehicle: &str,
        range: f64,
        variables: &[u8],
    ) -> &mut Self {
        self.command(cmd::SUBSCRIBE_VEHICLE_CONTEXT, |c| {
            put_f64(c, 0.0);
            put_f64(c, 1e9);
            put_str(c, vehicle);
            c.push(cmd::GET_VEHICLE_VARIABLE);
            put_f64(c, range);
            c.push(variables.len() as u8);
            c.extend_from_slice(variables);
        });
        self
    }
}

/// Departure of a vehicle added by TraCI, in SUMO's own strings ("best", "random", metres,
/// m/s, "max", ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Departure {
    pub vehicle_type: String,
    pub lane: String,
    pub pos: String,
    pub speed: String,
}

/// A pose for [`Request::move_to_xy`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XyPose {
    pub x: f64,
    pub y: f64,
    pub angle: f64,
    pub keep_route: i8,
    pub match_threshold: f64,
}

/// Converts a yaw (radians, counter-clockwise from +x) to SUMO's angle (degrees, clockwise
/// from north).
pub fn sumo_angle(yaw: f32) -> f64 {
    (90.0 - f64::from(yaw).to_degrees()).rem_euclid(360.0)
}

/// Converts SUMO's angle (degrees, clockwise from north) to a yaw (radians, counter-clockwise
/// from +x), in (-pi, pi].
pub fn yaw_from_sumo(angle: f64) -> f32 {
    let a = (90.0 - angle).to_radians();
    a.sin().atan2(a.cos()) as f32
}

pub(crate) fn put_f64(c: &mut Vec<u8>, v: f64) {
    c.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_str(c: &mut Vec<u8>, s: &str) {
    c.extend_from_slice(&(s.len() as i32).to_be_bytes());
    c.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_typed_str(c: &mut Vec<u8>, s: &str) {
    c.push(ty::STRING);
    put_str(c, s);
}

pub(crate) fn put_typed_i32(c: &mut Vec<u8>, v: i32) {
    c.push(ty::INTEGER);
    c.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_typed_f64(c: &mut Vec<u8>, v: f64) {
    c.push(ty::DOUBLE);
    put_f64(c, v);
}

pub(crate) fn put_compound(c: &mut Vec<u8>, n: i32) {
    c.push(ty::COMPOUND);
    c.extend_from_slice(&n.to_be_bytes());
}

/// A cursor over an answer.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TraciError> {
        if self.pos + n > self.buf.len() {
            return Err(TraciError::Protocol(format!(
                "answer ends after {} bytes, {} more expected",
                self.buf.len(),
                self.pos + n - self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, TraciError> {
        Ok(self.take(1)?[0])
    }

    pub fn i32(&mut self) -> Result<i32, TraciError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn f64(&mut self) -> Result<f64, TraciError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    pub fn str(&mut self) -> Result<&'a str, TraciError> {
        let n = self.i32()?;
        let n = usize::try_from(n)
            .map_err(|_| TraciError::Protocol(format!("negative string length {n}")))?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|e| TraciError::Protocol(format!("string is not UTF-8: {e}")))
    }

    /// A command header: its id and the length of its content.
    pub fn command_header(&mut self) -> Result<(u8, usize), TraciError> {
        let short = self.u8()? as usize;
        let (len, header) = if short == 0 {
            (self.i32()? as usize, 6)
        } else {
            (short, 2)
        };
        let id = self.u8()?;
        let content = len.checked_sub(header).ok_or_else(|| {
            TraciError::Protocol(format!("command 0x{id:02x} length {len} below its header"))
        })?;
        Ok((id, content))
    }

    /// The status of command `expected`: an error unless SUMO accepted it.
    pub fn status(&mut self, expected: u8) -> Result<(), TraciError> {
        let (id, _) = self.command_header()?;
        let result = self.u8()?;
        let message = self.str()?;
        if id != expected {
            return Err(TraciError::Protocol(format!(
                "status for command 0x{id:02x}, expected 0x{expected:02x}"
            )));
        }
        if result != 0 {
            return Err(TraciError::Refused {
                command: id,
                message: message.to_string(),
            });
        }
        Ok(())
    }

    /// A typed value.
    pub fn value(&mut self) -> Result<Value<'a>, TraciError> {
        let t = self.u8()?;
        Ok(match t {
            ty::POSITION_2D => Value::Position(self.f64()?, self.f64()?),
            ty::UBYTE => Value::UByte(self.u8()?),
            ty::BYTE => Value::Byte(self.u8()? as i8),
            ty::INTEGER => Value::Int(self.i32()?),
            ty::DOUBLE => Value::Double(self.f64()?),
            ty::STRING => Value::Str(self.str()?),
            ty::STRING_LIST => Value::StringList(self.i32()?.max(0) as usize),
            ty::COMPOUND => Value::Compound(self.i32()?.max(0) as usize),
            other => {
                return Err(TraciError::Protocol(format!(
                    "value type 0x{other:02x} not understood"
                )))
            }
        })
    }

    /// A typed double (or integer, widened).
    pub fn double(&mut self) -> Result<f64, TraciError> {
        match self.value()? {
            Value::Double(v) => Ok(v),
            Value::Int(v) => Ok(f64::from(v)),
            v => Err(TraciError::Protocol(format!(
                "expected a double, got {v:?}"
            ))),
        }
    }
}

/// The most an answer may announce: far above any answer the SUMO world asks for (a step's
/// subscriptions are a few kilobytes), so a corrupt length prefix is an error, not an
/// allocation of up to 4 GiB.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The length of an answer's body from its 4-byte prefix (which counts itself).
pub fn answer_len(prefix: [u8; 4]) -> Result<usize, TraciError> {
    let total = u32::from_be_bytes(prefix) as usize;
    let n = total
        .checked_sub(4)
        .ok_or_else(|| TraciError::Protocol(format!("answer length {total} below 4")))?;
    if n > MAX_ANSWER_BYTES {
        return Err(TraciError::Protocol(format!(
            "answer announces {n} bytes, more than the {MAX_ANSWER_BYTES} allowed"
        )));
    }
    Ok(n)
}

/// A connection to one SUMO process.
pub struct Client {
    stream: TcpStream,
    answer: Vec<u8>,
    timeout: Duration,
}

impl Client {
    /// Connects to SUMO on localhost `port`; every answer must arrive within `timeout`.
    pub fn connect(port: u16, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client {
            stream,
            answer: Vec::new(),
            timeout,
        })
    }

    /// Changes how long an answer may take.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends `request` and reads the whole answer; the returned reader starts at the first
    /// status.
    pub fn send(&mut self, request: &Request) -> Result<Reader<'_>, TraciError> {
        self.stream.write_all(&request.message())?;
        let mut len = [0u8; 4];
        read_exact(&mut self.stream, &mut len, self.timeout)?;
        let n = answer_len(len)?;
        self.answer.resize(n, 0);
        read_exact(&mut self.stream, &mut self.answer, self.timeout)?;
        Ok(Reader::new(&self.answer))
    }

    /// Sends commands that produce no result and checks every status.
    pub fn send_checked(&mut self, request: &Request) -> Result<(), TraciError> {
        let ids = request.ids().to_vec();
        let mut r = self.send(request)?;
        for id in ids {
            r.status(id)?;
        }
        Ok(())
    }

    /// SUMO's TraCI API version and its version string.
    pub fn version(&mut self) -> Result<(i32, String), TraciError> {
        let mut req = Request::default();
        req.get_version();
        let mut r = self.send(&req)?;
        r.status(cmd::GET_VERSION)?;
        let (id, _) = r.command_header()?;
        if id != cmd::GET_VERSION {
            return Err(TraciError::Protocol(format!(
                "version answer id 0x{id:02x}"
            )));
        }
        let api = r.i32()?;
        Ok((api, r.str()?.to_string()))
    }
}

fn read_exact(stream: &mut TcpStream, buf: &mut [u8], timeout: Duration) -> Result<(), TraciError> {
    match stream.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(TraciError::Closed),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(TraciError::Timeout(timeout))
        }
        Err(e) => Err(TraciError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_step_encodes_by_hand() {
        // Message length 4 + command (len 10: 1 + 1 + 8), id 0x02, 1.5 as an IEEE double
        // 0x3FF8000000000000.
        let mut r = Request::default();
        r.simulation_step(1.5);
        assert_eq!(
            r.message(),
            [0, 0, 0, 14, 10, 0x02, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn set_speed_mode_encodes_by_hand() {
        // len 1+1 + var 1 + string (4 + 3) + type 1 + int 4 = 15.
        let mut r = Request::default();
        r.set_vehicle_int("ego", var::SPEED_MODE, 0);
        assert_eq!(
            r.message(),
            [0, 0, 0, 19, 15, 0xc4, 0xb3, 0, 0, 0, 3, b'e', b'g', b'o', 0x09, 0, 0, 0, 0]
        );
    }

    #[test]
    fn set_min_gap_encodes_by_hand() {
        // len 1+1 + var 1 + string (4 + 3) + type 1 + double 8 = 19; 2.5 = 0x4004000000000000.
        let mut r = Request::default();
        r.set_vehicle_double("ego", var::MIN_GAP, 2.5);
        assert_eq!(
            r.message(),
            [
                0, 0, 0, 23, 19, 0xc4, 0x4c, 0, 0, 0, 3, b'e', b'g', b'o', 0x0b, 0x40, 0x04, 0, 0,
                0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn context_subscription_matches_sumos_own_example() {
        // The bytes of a vehicle context subscription from SUMO's issue tracker (#10108):
        // begin 7.0, end 1000.0, vehicle "veh_1", domain 0xa4, range 200.0, one variable 0x40.
        let mut r = Request::default();
        r.command(cmd::SUBSCRIBE_VEHICLE_CONTEXT, |c| {
            put_f64(c, 7.0);
            put_f64(c, 1000.0);
            put_str(c, "veh_1");
            c.push(0xa4);
            put_f64(c, 200.0);
            c.push(1);
            c.push(0x40);
        });
        let expected: [u8; 42] = [
            0x00, 0x00, 0x00, 0x2a, 0x26, 0x84, 0x40, 0x1c, 0, 0, 0, 0, 0, 0, 0x40, 0x8f, 0x40, 0,
            0, 0, 0, 0, 0, 0, 0, 0x05, b'v', b'e', b'h', b'_', b'1', 0xa4, 0x40, 0x69, 0, 0, 0, 0,
            0, 0, 0x01, 0x40,
        ];
        assert_eq!(r.message(), expected);
    }

    #[test]
    fn long_commands_use_the_extended_length() {
        // A route of 60 four-letter edges: 1 var + 4+1 id + 1 type + 4 count + 60 * 8 = 491
        // content bytes; 497 with the 6-byte extended header (0, u32 total, id).
        let edges: Vec<&str> = vec!["edge"; 60];
        let mut r = Request::default();
        r.add_route("r", &edges);
        let m = r.message();
        assert_eq!(&m[..4], &(4u32 + 497).to_be_bytes());
        assert_eq!(m[4], 0);
        assert_eq!(&m[5..9], &497u32.to_be_bytes());
        assert_eq!(m[9], cmd::SET_ROUTE_VARIABLE);
        let mut rd = Reader::new(&m[4..]);
        assert_eq!(rd.command_header().unwrap(), (cmd::SET_ROUTE_VARIABLE, 491));
    }

    #[test]
    fn reads_statuses_and_typed_values() {
        // Status ok for 0x02 with an empty message, then a refused 0xc4 with a message.
        let mut a = vec![7, 0x02, 0, 0, 0, 0, 0];
        a.extend_from_slice(&[10, 0xc4, 0xff, 0, 0, 0, 3, b'b', b'a', b'd']);
        // A 2D position (1.0, -2.5) and a string "ab".
        a.push(ty::POSITION_2D);
        a.extend_from_slice(&1.0f64.to_be_bytes());
        a.extend_from_slice(&(-2.5f64).to_be_bytes());
        a.extend_from_slice(&[ty::STRING, 0, 0, 0, 2, b'a', b'b']);
        let mut r = Reader::new(&a);
        r.status(cmd::SIMULATION_STEP).unwrap();
        match r.status(cmd::SET_VEHICLE_VARIABLE) {
            Err(TraciError::Refused { command, message }) => {
                assert_eq!((command, message.as_str()), (0xc4, "bad"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.value().unwrap(), Value::Position(1.0, -2.5));
        assert_eq!(r.value().unwrap(), Value::Str("ab"));
        assert!(r.is_empty());
        assert!(matches!(r.u8(), Err(TraciError::Protocol(_))));
    }

    #[test]
    fn angles_convert_both_ways() {
        // East (yaw 0) is 90 degrees in SUMO, north (yaw pi/2) is 0, west 270, south 180.
        let q = std::f32::consts::FRAC_PI_2;
        for (yaw, angle) in [(0.0, 90.0), (q, 0.0), (2.0 * q, 270.0), (-q, 180.0)] {
            let d = (sumo_angle(yaw) - angle).rem_euclid(360.0);
            assert!(d.min(360.0 - d) < 1e-4, "{yaw}");
            let back = yaw_from_sumo(angle);
            assert!(
                (back - yaw).abs() < 1e-5
                    || ((back - yaw).abs() - std::f32::consts::TAU).abs() < 1e-5,
                "{yaw} {back}"
            );
        }
    }
}
