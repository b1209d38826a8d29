//! The friend_connection and Messenger packets carried as net_crypto data
//! (docs/PROTOCOL.md §7.3–7.4): what a c-toxcore friend sends or expects.
//!
//! [`MessengerPacket::parse`] takes the data of one lossless or lossy
//! net_crypto packet (id byte first). Ids toxlink does not interpret
//! (conferences, MSI, A/V) come back as [`MessengerPacket::Other`] rather than
//! as errors, because a c-toxcore friend may send them at any time.

use super::packed::PackedNode;
use super::{array, out_slice, WireError};

/// Packet ids (docs/PROTOCOL.md §7.3, §7.4).
pub mod id {
    /// friend_connection keep-alive.
    pub const ALIVE: u8 = 16;
    /// friend_connection: relays the sender is connected to.
    pub const SHARE_RELAYS: u8 = 17;
    /// friend_connection: friend request to a connected non-friend.
    pub const FRIEND_REQUESTS: u8 = 18;
    /// Messenger: the friend is online.
    pub const ONLINE: u8 = 24;
    /// Messenger: the friend deleted us.
    pub const OFFLINE: u8 = 25;
    /// Nickname.
    pub const NICKNAME: u8 = 48;
    /// Status message.
    pub const STATUSMESSAGE: u8 = 49;
    /// User status.
    pub const USERSTATUS: u8 = 50;
    /// Typing notification.
    pub const TYPING: u8 = 51;
    /// Chat message.
    pub const MESSAGE: u8 = 64;
    /// Chat action ("/me").
    pub const ACTION: u8 = 65;
    /// ToxAV call signalling.
    pub const MSI: u8 = 69;
    /// File transfer offer.
    pub const FILE_SENDREQUEST: u8 = 80;
    /// File transfer control.
    pub const FILE_CONTROL: u8 = 81;
    /// File data chunk.
    pub const FILE_DATA: u8 = 82;
    /// First custom lossless id.
    pub const CUSTOM_LOSSLESS_FIRST: u8 = 160;
    /// Last custom lossless id.
    pub const CUSTOM_LOSSLESS_LAST: u8 = 191;
    /// First custom lossy id.
    pub const CUSTOM_LOSSY_FIRST: u8 = 200;
    /// Last custom lossy id.
    pub const CUSTOM_LOSSY_LAST: u8 = 254;
}

/// Most relays one SHARE_RELAYS carries (`MAX_SHARED_RELAYS`).
pub const MAX_SHARED_RELAYS: usize = 3;
/// Longest nickname.
pub const MAX_NAME_LENGTH: usize = 128;
/// Longest status message.
pub const MAX_STATUSMESSAGE_LENGTH: usize = 1007;
/// Longest message or action text.
pub const MAX_MESSAGE_LENGTH: usize = 1372;
/// Longest file name.
pub const MAX_FILENAME_LENGTH: usize = 255;
/// Bytes of file data in one full FILE_DATA chunk.
pub const MAX_FILE_DATA: usize = 1371;

/// Up to three relays (SHARE_RELAYS body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayList {
    nodes: [Option<PackedNode>; MAX_SHARED_RELAYS],
}

impl RelayList {
    /// A list of at most three nodes (extra ones are ignored).
    pub fn new(nodes: &[PackedNode]) -> Self {
        let mut l = RelayList::default();
        for (slot, n) in l.nodes.iter_mut().zip(nodes) {
            *slot = Some(*n);
        }
        l
    }

    /// The nodes.
    pub fn iter(&self) -> impl Iterator<Item = &PackedNode> {
        self.nodes.iter().flatten()
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Control codes of FILE_CONTROL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileControlKind {
    /// 0: accept / resume.
    Accept,
    /// 1: pause.
    Pause,
    /// 2: kill.
    Kill,
    /// 3: seek to a position (only before accepting).
    Seek(u64),
}

/// One friend_connection or Messenger packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessengerPacket<'a> {
    /// 16: keep-alive.
    Alive,
    /// 17: relays the sender is connected to.
    ShareRelays(RelayList),
    /// 18: friend request.
    FriendRequest {
        /// Opaque nospam.
        nospam: [u8; 4],
        /// Message (≥ 1 byte).
        message: &'a [u8],
    },
    /// 24: online.
    Online,
    /// 25: offline.
    Offline,
    /// 48: nickname.
    Nickname(&'a [u8]),
    /// 49: status message.
    StatusMessage(&'a [u8]),
    /// 50: user status (0 none, 1 away, 2 busy; higher values are ignored by
    /// c-toxcore).
    UserStatus(u8),
    /// 51: typing.
    Typing(bool),
    /// 64: message text.
    Message(&'a [u8]),
    /// 65: action text.
    Action(&'a [u8]),
    /// 80: file offer.
    FileSendRequest {
        /// Transfer number (per direction).
        file_number: u8,
        /// 0 data, 1 avatar.
        file_type: u32,
        /// Size; `u64::MAX` = unknown.
        size: u64,
        /// File id.
        file_id: [u8; 32],
        /// File name (0..=255 bytes).
        name: &'a [u8],
    },
    /// 81: file control.
    FileControl {
        /// 0: about a file the sender of this control sends; 1: receives.
        send_receive: u8,
        /// Transfer number.
        file_number: u8,
        /// What to do.
        control: FileControlKind,
    },
    /// 82: file data.
    FileData {
        /// Transfer number.
        file_number: u8,
        /// Chunk (≤ 1371 bytes; shorter ends the transfer).
        data: &'a [u8],
    },
    /// 160..=191: custom lossless (the id byte is part of the application's
    /// data, as c-toxcore delivers it).
    CustomLossless(&'a [u8]),
    /// 200..=254: custom lossy, id byte included.
    CustomLossy(&'a [u8]),
    /// Anything else (conferences, MSI, A/V, unknown): id and body.
    Other {
        /// The id.
        id: u8,
        /// The body after the id.
        body: &'a [u8],
    },
}

const KIND: &str = "messenger packet";

fn bad_len(len: usize) -> WireError {
    WireError::BadLength { kind: KIND, len }
}

impl<'a> MessengerPacket<'a> {
    /// Parses the data of one net_crypto packet (id byte first).
    pub fn parse(b: &'a [u8]) -> Result<Self, WireError> {
        let (&first, body) = b.split_first().ok_or(WireError::Empty)?;
        let exact = |n: usize| {
            if body.len() == n {
                Ok(())
            } else {
                Err(bad_len(b.len()))
            }
        };
        let at_most = |n: usize| {
            if body.len() <= n {
                Ok(())
            } else {
                Err(bad_len(b.len()))
            }
        };
        let text = |n: usize| {
            if (1..=n).contains(&body.len()) {
                Ok(())
            } else {
                Err(bad_len(b.len()))
            }
        };
        Ok(match first {
            id::ALIVE => {
                exact(0)?;
                MessengerPacket::Alive
            }
            id::SHARE_RELAYS => {
                // c-toxcore reads at most 3 nodes and ignores the whole packet
                // if one is malformed (§7.3).
                let mut nodes = [None; MAX_SHARED_RELAYS];
                let mut rest = body;
                for slot in nodes.iter_mut() {
                    if rest.is_empty() {
                        break;
                    }
                    let (node, used) = PackedNode::parse(rest)?;
                    *slot = Some(node);
                    rest = &rest[used..];
                }
                MessengerPacket::ShareRelays(RelayList { nodes })
            }
            id::FRIEND_REQUESTS => {
                if body.len() < 5 {
                    return Err(bad_len(b.len()));
                }
                MessengerPacket::FriendRequest {
                    nospam: array(body, 0),
                    message: &body[4..],
                }
            }
            id::ONLINE => {
                exact(0)?;
                MessengerPacket::Online
            }
            id::OFFLINE => {
                exact(0)?;
                MessengerPacket::Offline
            }
            id::NICKNAME => {
                at_most(MAX_NAME_LENGTH)?;
                MessengerPacket::Nickname(body)
            }
            id::STATUSMESSAGE => {
                at_most(MAX_STATUSMESSAGE_LENGTH)?;
                MessengerPacket::StatusMessage(body)
            }
            id::USERSTATUS => {
                exact(1)?;
                MessengerPacket::UserStatus(body[0])
            }
            id::TYPING => {
                exact(1)?;
                MessengerPacket::Typing(body[0] != 0)
            }
            id::MESSAGE => {
                text(MAX_MESSAGE_LENGTH)?;
                MessengerPacket::Message(body)
            }
            id::ACTION => {
                text(MAX_MESSAGE_LENGTH)?;
                MessengerPacket::Action(body)
            }
            id::FILE_SENDREQUEST => {
                const FIXED: usize = 1 + 4 + 8 + 32;
                if body.len() < FIXED || body.len() > FIXED + MAX_FILENAME_LENGTH {
                    return Err(bad_len(b.len()));
                }
                MessengerPacket::FileSendRequest {
                    file_number: body[0],
                    file_type: u32::from_be_bytes(array(body, 1)),
                    size: u64::from_be_bytes(array(body, 5)),
                    file_id: array(body, 13),
                    name: &body[FIXED..],
                }
            }
            id::FILE_CONTROL => {
                if body.len() < 3 {
                    return Err(bad_len(b.len()));
                }
                let control = match body[2] {
                    0 => FileControlKind::Accept,
                    1 => FileControlKind::Pause,
                    2 => FileControlKind::Kill,
                    3 => {
                        exact(3 + 8)?;
                        FileControlKind::Seek(u64::from_be_bytes(array(body, 3)))
                    }
                    _ => {
                        return Err(WireError::BadField {
                            kind: KIND,
                            field: "file control",
                        })
                    }
                };
                if body[2] != 3 {
                    exact(3)?;
                }
                if body[0] > 1 {
                    return Err(WireError::BadField {
                        kind: KIND,
                        field: "send_receive",
                    });
                }
                MessengerPacket::FileControl {
                    send_receive: body[0],
                    file_number: body[1],
                    control,
                }
            }
            id::FILE_DATA => {
                if body.is_empty() || body.len() > 1 + MAX_FILE_DATA {
                    return Err(bad_len(b.len()));
                }
                MessengerPacket::FileData {
                    file_number: body[0],
                    data: &body[1..],
                }
            }
            id::CUSTOM_LOSSLESS_FIRST..=id::CUSTOM_LOSSLESS_LAST => {
                MessengerPacket::CustomLossless(b)
            }
            id::CUSTOM_LOSSY_FIRST..=id::CUSTOM_LOSSY_LAST => MessengerPacket::CustomLossy(b),
            other => MessengerPacket::Other { id: other, body },
        })
    }

    /// The id byte.
    pub fn id(&self) -> u8 {
        match self {
            MessengerPacket::Alive => id::ALIVE,
            MessengerPacket::ShareRelays(_) => id::SHARE_RELAYS,
            MessengerPacket::FriendRequest { .. } => id::FRIEND_REQUESTS,
            MessengerPacket::Online => id::ONLINE,
            MessengerPacket::Offline => id::OFFLINE,
            MessengerPacket::Nickname(_) => id::NICKNAME,
            MessengerPacket::StatusMessage(_) => id::STATUSMESSAGE,
            MessengerPacket::UserStatus(_) => id::USERSTATUS,
            MessengerPacket::Typing(_) => id::TYPING,
            MessengerPacket::Message(_) => id::MESSAGE,
            MessengerPacket::Action(_) => id::ACTION,
            MessengerPacket::FileSendRequest { .. } => id::FILE_SENDREQUEST,
            MessengerPacket::FileControl { .. } => id::FILE_CONTROL,
            MessengerPacket::FileData { .. } => id::FILE_DATA,
            MessengerPacket::CustomLossless(d) | MessengerPacket::CustomLossy(d) => {
                d.first().copied().unwrap_or(0)
            }
            MessengerPacket::Other { id, .. } => *id,
        }
    }

    /// Whether net_crypto carries this id losslessly (docs/PROTOCOL.md §4.8).
    pub fn is_lossless(&self) -> bool {
        matches!(
            super::net_crypto::IdClass::of(self.id()),
            super::net_crypto::IdClass::Lossless
        )
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            MessengerPacket::Alive | MessengerPacket::Online | MessengerPacket::Offline => 0,
            MessengerPacket::ShareRelays(l) => l.iter().map(PackedNode::packed_len).sum(),
            MessengerPacket::FriendRequest { message, .. } => 4 + message.len(),
            MessengerPacket::Nickname(t)
            | MessengerPacket::StatusMessage(t)
            | MessengerPacket::Message(t)
            | MessengerPacket::Action(t) => t.len(),
            MessengerPacket::UserStatus(_) | MessengerPacket::Typing(_) => 1,
            MessengerPacket::FileSendRequest { name, .. } => 45 + name.len(),
            MessengerPacket::FileControl { control, .. } => match control {
                FileControlKind::Seek(_) => 11,
                _ => 3,
            },
            MessengerPacket::FileData { data, .. } => 1 + data.len(),
            MessengerPacket::CustomLossless(d) | MessengerPacket::CustomLossy(d) => {
                d.len().saturating_sub(1)
            }
            MessengerPacket::Other { body, .. } => body.len(),
        }
    }

    /// Writes the packet into `out`; returns its length. The result always
    /// parses back to `self` (encode refuses what parse would refuse).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.encoded_len();
        // Validate through the parser's rules on the encoded bytes: write
        // first, then parse-check; both are bounded by `len`.
        let o = out_slice(out, len)?;
        o[0] = self.id();
        let body = &mut o[1..];
        match self {
            MessengerPacket::Alive | MessengerPacket::Online | MessengerPacket::Offline => {}
            MessengerPacket::ShareRelays(l) => {
                let mut at = 0;
                for n in l.iter() {
                    at += n.encode(&mut body[at..])?;
                }
            }
            MessengerPacket::FriendRequest { nospam, message } => {
                body[..4].copy_from_slice(nospam);
                body[4..].copy_from_slice(message);
            }
            MessengerPacket::Nickname(t)
            | MessengerPacket::StatusMessage(t)
            | MessengerPacket::Message(t)
            | MessengerPacket::Action(t) => body.copy_from_slice(t),
            MessengerPacket::UserStatus(s) => body[0] = *s,
            MessengerPacket::Typing(t) => body[0] = u8::from(*t),
            MessengerPacket::FileSendRequest {
                file_number,
                file_type,
                size,
                file_id,
                name,
            } => {
                body[0] = *file_number;
                body[1..5].copy_from_slice(&file_type.to_be_bytes());
                body[5..13].copy_from_slice(&size.to_be_bytes());
                body[13..45].copy_from_slice(file_id);
                body[45..].copy_from_slice(name);
            }
            MessengerPacket::FileControl {
                send_receive,
                file_number,
                control,
            } => {
                body[0] = *send_receive;
                body[1] = *file_number;
                body[2] = match control {
                    FileControlKind::Accept => 0,
                    FileControlKind::Pause => 1,
                    FileControlKind::Kill => 2,
                    FileControlKind::Seek(pos) => {
                        body[3..11].copy_from_slice(&pos.to_be_bytes());
                        3
                    }
                };
            }
            MessengerPacket::FileData { file_number, data } => {
                body[0] = *file_number;
                body[1..].copy_from_slice(data);
            }
            MessengerPacket::CustomLossless(d) | MessengerPacket::CustomLossy(d) => {
                body.copy_from_slice(d.get(1..).unwrap_or_default())
            }
            MessengerPacket::Other { body: b, .. } => body.copy_from_slice(b),
        }
        let encoded = &o[..len];
        match MessengerPacket::parse(encoded) {
            Ok(p) if p == *self => Ok(len),
            Ok(_) | Err(_) => Err(WireError::BadField {
                kind: KIND,
                field: "value not encodable",
            }),
        }
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.encoded_len()];
        self.encode(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
