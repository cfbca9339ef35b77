package main

// DTLS 1.2 record facts the carrier needs (RFC 6347 4.1 and 4.2.2), kept free
// of any DTLS library so the peer builds without pion: cutting a body into
// records, and telling, from the records a stack writes, which are
// retransmitted copies and when a flight is complete.

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
)

const (
	dtlsHeaderLen   = 13 // type, version, epoch, 48-bit sequence number, length
	dtlsHsHeaderLen = 12 // type, length, message_seq, fragment_offset, fragment_length

	ctChangeCipherSpec = 20
	ctAlert            = 21
	ctHandshake        = 22

	hsClientHello        = 1
	hsServerHello        = 2
	hsHelloVerifyRequest = 3
	hsServerHelloDone    = 14

	extExtendedMasterSecret = 0x0017
)

type dtlsRecord struct {
	contentType byte
	epoch       uint16
	fragment    []byte // the payload: encrypted from epoch 1 on
	raw         []byte // the whole record, header included
}

// splitRecords cuts a carrier body into its whole DTLS records (version 0xFExx).
func splitRecords(b []byte) ([]dtlsRecord, error) {
	var recs []dtlsRecord
	for len(b) > 0 {
		if len(b) < dtlsHeaderLen {
			return recs, fmt.Errorf("%d trailing bytes are no DTLS record header", len(b))
		}
		if b[1] != 0xfe {
			return recs, fmt.Errorf("record version %02x%02x is not DTLS", b[1], b[2])
		}
		n := dtlsHeaderLen + int(binary.BigEndian.Uint16(b[11:13]))
		if len(b) < n {
			return recs, fmt.Errorf("a DTLS record of %d bytes is cut short at %d", n, len(b))
		}
		recs = append(recs, dtlsRecord{contentType: b[0], epoch: binary.BigEndian.Uint16(b[3:5]),
			fragment: b[dtlsHeaderLen:n], raw: b[:n]})
		b = b[n:]
	}
	return recs, nil
}

// hsFragment is the header of a plaintext (epoch 0) handshake fragment.
type hsFragment struct {
	msgType                 byte
	length, offset, fragLen uint32
	msgSeq                  uint16
	body                    []byte // this fragment's part of the message
	complete                bool   // the fragment ends its message
}

func uint24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

func (r dtlsRecord) handshake() (hsFragment, bool) {
	f := r.fragment
	if r.contentType != ctHandshake || r.epoch != 0 || len(f) < dtlsHsHeaderLen {
		return hsFragment{}, false
	}
	h := hsFragment{msgType: f[0], length: uint24(f[1:4]), msgSeq: binary.BigEndian.Uint16(f[4:6]),
		offset: uint24(f[6:9]), fragLen: uint24(f[9:12]), body: f[dtlsHsHeaderLen:]}
	h.complete = h.offset+h.fragLen >= h.length
	return h, true
}

// helloInfo is what the log says about a ServerHello: the suite and whether
// the extended master secret (RFC 7627) was agreed.
type helloInfo struct {
	suite uint16
	ems   bool
	seen  bool
}

func (h helloInfo) String() string {
	if !h.seen {
		return "(no ServerHello seen)"
	}
	ems := "without extended master secret"
	if h.ems {
		ems = "with extended master secret"
	}
	return fmt.Sprintf("%s %s", suiteName(h.suite), ems)
}

// serverHello finds an unfragmented ServerHello among a body's records.
func serverHello(recs []dtlsRecord) helloInfo {
	for _, r := range recs {
		h, ok := r.handshake()
		if !ok || h.msgType != hsServerHello || h.offset != 0 || !h.complete {
			continue
		}
		b := h.body // version(2) random(32) session_id<0..32> suite(2) compression(1) extensions<0..2^16-1>
		if len(b) < 35 || len(b) < 35+int(b[34])+3 {
			continue
		}
		b = b[35+int(b[34]):]
		info := helloInfo{suite: binary.BigEndian.Uint16(b), seen: true}
		if b = b[3:]; len(b) >= 2 {
			ext := b[2:]
			if n := int(binary.BigEndian.Uint16(b)); n < len(ext) {
				ext = ext[:n]
			}
			for len(ext) >= 4 {
				typ, n := binary.BigEndian.Uint16(ext), int(binary.BigEndian.Uint16(ext[2:]))
				info.ems = info.ems || typ == extExtendedMasterSecret
				if len(ext) < 4+n {
					break
				}
				ext = ext[4+n:]
			}
		}
		return info
	}
	return helloInfo{}
}

// flightTracker watches the records a DTLS stack writes. A stack that runs
// its own retransmission timer (pion does) writes a flight again, with new
// record sequence numbers, when the answer is slow; over HTTP every flight is
// answered, so such copies are left out of the carrier bodies. A copy is
// recognised by its handshake message_seq and fragment offset, which only
// grow within a handshake, or as a second ChangeCipherSpec or a second
// encrypted handshake record (the Finished; no renegotiation here).
//
// A write completes a flight when it carries the last message of one: a
// ClientHello, a HelloVerifyRequest, a ServerHelloDone, a Finished (the
// encrypted handshake record that ends flights 4b, 5 and 6), an alert, or
// application data (one record per write).
type flightTracker struct {
	newest        bool // a handshake fragment was kept; lastSeq/lastOffset are its
	lastSeq       uint16
	lastOffset    uint32
	ccs, finished bool
	copies        int // records left out
	hello         helloInfo
}

// add returns the records of one written datagram that are new, and whether
// they complete a flight. Bytes that are no DTLS records pass unchanged.
func (t *flightTracker) add(datagram []byte) (keep []byte, complete bool) {
	recs, err := splitRecords(datagram)
	if err != nil {
		return datagram, false
	}
	for _, r := range recs {
		switch h, isHs := r.handshake(); {
		case isHs:
			if t.newest && (h.msgSeq < t.lastSeq || h.msgSeq == t.lastSeq && h.offset <= t.lastOffset) {
				t.copies++
				continue
			}
			t.newest, t.lastSeq, t.lastOffset = true, h.msgSeq, h.offset
			if h.msgType == hsServerHello && !t.hello.seen {
				t.hello = serverHello([]dtlsRecord{r})
			}
			switch h.msgType {
			case hsClientHello, hsHelloVerifyRequest, hsServerHelloDone:
				complete = complete || h.complete
			}
		case r.contentType == ctChangeCipherSpec:
			if t.ccs {
				t.copies++
				continue
			}
			t.ccs = true
		case r.contentType == ctHandshake: // encrypted: the Finished
			if t.finished {
				t.copies++
				continue
			}
			t.finished, complete = true, true
		default: // alerts and application data are never retransmitted
			complete = true
		}
		keep = append(keep, r.raw...)
	}
	return keep, complete
}

// dtlsAlert finds a plaintext alert among the records a stack wrote (pion
// writes a fatal alert by itself, then ends the handshake).
func dtlsAlert(out []byte) (desc byte, fatal, ok bool) {
	recs, _ := splitRecords(out)
	for _, r := range recs {
		if r.contentType == ctAlert && r.epoch == 0 && len(r.fragment) == 2 {
			return r.fragment[1], r.fragment[0] == 2, true
		}
	}
	return 0, false, false
}

// dtlsAlertName names the plaintext alert a stack wrote, if any.
func dtlsAlertName(out []byte) string {
	desc, _, ok := dtlsAlert(out)
	if !ok {
		return ""
	}
	if name, known := alertNames[desc]; known {
		return name
	}
	return fmt.Sprintf("alert_%d", desc)
}

// suiteName names the DTLS 1.2 suites pion offers (crypto/tls knows the GCM and CBC ones).
func suiteName(id uint16) string {
	switch id {
	case 0xc0ac:
		return "TLS_ECDHE_ECDSA_WITH_AES_128_CCM"
	case 0xc0ae:
		return "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"
	}
	return tls.CipherSuiteName(id)
}
