package frame

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestBuildRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		payload := bytes.Repeat([]byte{'x'}, n)
		b := Text(payload)
		f, err := ws.ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("n=%d: read back: %v", n, err)
		}
		if !f.Header.Fin || f.Header.OpCode != ws.OpText || f.Header.Masked {
			t.Fatalf("n=%d: header %+v", n, f.Header)
		}
		if !bytes.Equal(f.Payload, payload) {
			t.Fatalf("n=%d: payload differs", n)
		}
	}
}

func TestDeliveryRoundTrip(t *testing.T) {
	tests := []struct {
		device  string
		payload string
	}{
		{"", `{"type":"message"}`},
		{"01JDEVICE", `{"type":"message","body":"` + strings.Repeat("é", 200) + `"}`},
	}
	for _, tt := range tests {
		env := Delivery(tt.device, []byte(tt.payload))
		dev, wsf, ctl, err := ParseDelivery(env)
		if err != nil {
			t.Fatal(err)
		}
		if ctl != nil {
			t.Errorf("delivery parsed as control %q", ctl)
		}
		if dev != tt.device {
			t.Errorf("device = %q, want %q", dev, tt.device)
		}
		f, err := ws.ReadFrame(bytes.NewReader(wsf))
		if err != nil {
			t.Fatal(err)
		}
		if string(f.Payload) != tt.payload {
			t.Errorf("payload = %q", f.Payload)
		}
	}
}

func TestParseDeliveryRejectsShort(t *testing.T) {
	for _, data := range [][]byte{nil, {}, {5, 'a'}, {0, 0x81}} {
		if _, _, _, err := ParseDelivery(data); err == nil {
			t.Errorf("ParseDelivery(%v) = nil error", data)
		}
	}
}

func TestControlRoundTrip(t *testing.T) {
	_, wsf, ctl, err := ParseDelivery(Control([]byte(`{"disconnect_device":"d1"}`)))
	if err != nil || wsf != nil || string(ctl) != `{"disconnect_device":"d1"}` {
		t.Fatalf("control = %q frame %q err %v", ctl, wsf, err)
	}
}

func TestClose(t *testing.T) {
	f, err := ws.ReadFrame(bytes.NewReader(Close(1008, strings.Repeat("r", 300))))
	if err != nil {
		t.Fatal(err)
	}
	code, reason := ws.ParseCloseFrameData(f.Payload)
	if f.Header.OpCode != ws.OpClose || code != 1008 || len(reason) != 123 {
		t.Fatalf("close frame: op %v code %d reason len %d", f.Header.OpCode, code, len(reason))
	}
}

func BenchmarkDelivery(b *testing.B) {
	payload := []byte(`{"type":"message","conversation_id":"01JCONV","seq":42,"id":"5d1f","sender_id":"01JUSER","kind":"text","body":"hello there","ts":1700000000000}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = Delivery("01JDEVICE", payload)
	}
}
