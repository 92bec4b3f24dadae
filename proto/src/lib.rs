//! The wire contracts of Hotline: gRPC services and the events on the bus.
//!
//! Generated code lives in `OUT_DIR` and is never edited; each proto package
//! is a module here (`hotline.tickets.v1` → [`tickets::v1`]).
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC reflection.

/// Encoded descriptors of every Hotline proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hotline_descriptor");

pub mod tickets {
    pub mod v1 {
        tonic::include_proto!("hotline.tickets.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("hotline.events.v1");
    }
}

pub mod sla {
    pub mod v1 {
        tonic::include_proto!("hotline.sla.v1");
    }
}

pub mod pager {
    pub mod v1 {
        tonic::include_proto!("hotline.pager.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("hotline.admin.v1");
    }
}

pub mod contracts {
    pub mod v1 {
        tonic::include_proto!("hotline.contracts.v1");
    }
}

pub mod dispatch {
    pub mod v1 {
        tonic::include_proto!("hotline.dispatch.v1");
    }
}
