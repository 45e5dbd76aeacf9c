//! The gRPC codec of every gwmon service: protobuf through prost, with small stream
//! buffers.
//!
//! tonic gives every call an encode and a decode buffer of 8 KiB up front. A monitor holds
//! one gateway session per gateway, each a stream in both directions whose messages are
//! mostly beacons and acks of a few dozen bytes: at 5,000 gateways those buffers alone were
//! 78 MiB of the leader's heap. Here they start at [`BUFFER_BYTES`] and grow only for a
//! stream that carries a larger message.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Where a stream's encode and decode buffers start.
pub const BUFFER_BYTES: usize = 1024;
/// How much encoded data a stream buffers before handing it to the transport (tonic's
/// default).
pub const YIELD_BYTES: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
}

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers; the generated services and clients use it.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
