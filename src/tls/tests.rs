//! The PEM the redis crate is given holds exactly the certificates it was made of.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::pem_of;

/// Certificates of every length around the 48-byte (64-character) line boundary come back
/// byte for byte, in order.
#[test]
fn pem_of_round_trips_every_certificate_in_order() {
    let certificates: Vec<CertificateDer<'static>> = (1..=200usize)
        .map(|length| {
            CertificateDer::from(
                (0..length)
                    .map(|byte| u8::try_from((byte * 7 + length) % 256).unwrap())
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    let pem = pem_of(&certificates);
    let read = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(read, certificates);
    assert!(
        std::str::from_utf8(&pem)
            .unwrap()
            .lines()
            .all(|line| line.len() <= 64),
        "no line is longer than PEM allows"
    );
}
