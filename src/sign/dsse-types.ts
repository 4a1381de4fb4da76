/** A DSSE envelope (https://github.com/secure-systems-lab/dsse), JSON form. */
export interface DsseSignature {
  /** sha256 (hex) of the signer's public key, DER SubjectPublicKeyInfo. */
  keyid: string;
  /** base64 of the Ed25519 signature over PAE(payloadType, payload). */
  sig: string;
}

export interface DsseEnvelope {
  payloadType: string;
  /** base64 of the payload bytes. */
  payload: string;
  signatures: DsseSignature[];
}
