"""Independent check of the hazgate-sim farm with pymodbus (pin: pymodbus==3.8.6).

Reads every documented value of scenarios/byte-orders.toml over Modbus TCP and over
RTU-over-TCP framing, decodes each type in each byte/word order with `struct`
(cross-checked with pymodbus' own decoder where it has one), and checks exceptions
on the `exceptions` device of scenarios/faults.toml.

Usage: check_pymodbus.py --tcp HOST:PORT --rtu HOST:PORT --exceptions HOST:PORT
Exit 0 and print OK lines on success; exit 1 with every failure otherwise.
"""

import argparse
import struct
import sys

import pymodbus
from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu import ExceptionResponse

FAILURES = []

ORDERS = {"abcd": 0, "cdab": 100, "badc": 200, "dcba": 300}
# offset, struct format (big-endian), count, value, scale
LAYOUT = [
    (0, ">H", 1, 4660, 1),
    (1, ">h", 1, -1234, 1),
    (2, ">h", 1, -56.78, 100),
    (3, ">H", 1, 1, 1),
    (4, ">I", 2, 305419896, 1),
    (6, ">i", 2, -123456789, 1),
    (8, ">f", 2, 123.456, 1),
    (10, ">d", 4, 12345.6789, 1),
    (14, ">Q", 4, 1234567890123, 1),
    (18, ">q", 4, -1234567890123, 1),
]


def check(cond, what):
    if cond:
        print("OK", what)
    else:
        print("FAIL", what)
        FAILURES.append(what)


def to_big_endian(words, order):
    """Registers in `order` -> the value's big-endian bytes."""
    if order in ("cdab", "dcba"):
        words = list(reversed(words))
    out = b""
    for w in words:
        b = struct.pack(">H", w)
        out += b[::-1] if order in ("badc", "dcba") else b
    return out


def close(a, b, fmt):
    tol = 1e-4 if fmt == ">f" else 1e-9
    return abs(a - b) <= tol * max(1.0, abs(b))


def read_block(client, base, label):
    rr = client.read_holding_registers(base, count=22, slave=1)
    if rr.isError():
        check(False, f"{label}: read holding {base}: {rr}")
        return None
    return rr.registers


def check_device(client, label, orders):
    for order in orders:
        base = ORDERS[order]
        regs = read_block(client, base, label)
        if regs is None:
            continue
        for off, fmt, n, value, scale in LAYOUT:
            raw = to_big_endian(regs[off:off + n], order)
            got = struct.unpack(fmt, raw)[0] / scale
            check(close(got, value, fmt), f"{label} {order} {fmt} at {base + off}: {got} == {value}")
        # pymodbus' own decoder knows word order (big = ABCD, little = CDAB).
        if order in ("abcd", "cdab"):
            wo = "big" if order == "abcd" else "little"
            dt = client.DATATYPE
            f = client.convert_from_registers(regs[8:10], dt.FLOAT32, word_order=wo)
            i = client.convert_from_registers(regs[6:8], dt.INT32, word_order=wo)
            d = client.convert_from_registers(regs[10:14], dt.FLOAT64, word_order=wo)
            q = client.convert_from_registers(regs[18:22], dt.INT64, word_order=wo)
            check(abs(f - 123.456) < 1e-4, f"{label} {order} pymodbus FLOAT32 {f}")
            check(i == -123456789, f"{label} {order} pymodbus INT32 {i}")
            check(abs(d - 12345.6789) < 1e-9, f"{label} {order} pymodbus FLOAT64 {d}")
            check(q == -1234567890123, f"{label} {order} pymodbus INT64 {q}")
    coils = client.read_coils(0, count=8, slave=1)
    check(not coils.isError() and coils.bits[:8] == [True, False, True, True, False, False, True, False],
          f"{label} coils {getattr(coils, 'bits', coils)}")
    dis = client.read_discrete_inputs(0, count=8, slave=1)
    check(not dis.isError() and dis.bits[:8] == [False, True, True, False, True, False, False, True],
          f"{label} discrete inputs {getattr(dis, 'bits', dis)}")


def connect(hostport, framer):
    host, port = hostport.rsplit(":", 1)
    client = ModbusTcpClient(host, port=int(port), framer=framer, timeout=3, retries=0)
    if not client.connect():
        check(False, f"connect {hostport} ({framer})")
        return None
    return client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", required=True)
    ap.add_argument("--rtu", required=True)
    ap.add_argument("--exceptions", required=True)
    args = ap.parse_args()
    print("pymodbus", pymodbus.__version__)

    tcp = connect(args.tcp, FramerType.SOCKET)
    if tcp:
        check_device(tcp, "tcp", list(ORDERS))
        ir = tcp.read_input_registers(8, count=2, slave=1)
        check(not ir.isError() and ir.registers == [0x42F6, 0xE979], f"tcp input registers {ir}")
        wr = tcp.write_register(0, 0xBEEF, slave=1)
        rr = tcp.read_holding_registers(0, count=1, slave=1)
        check(not wr.isError() and rr.registers == [0xBEEF], f"tcp write/read back {rr}")
        bad = tcp.read_holding_registers(50, count=1, slave=1)
        check(bad.isError() and bad.exception_code == 2, f"tcp unmapped -> 02: {bad}")
        tcp.close()

    rtu = connect(args.rtu, FramerType.RTU)
    if rtu:
        check_device(rtu, "rtu-over-tcp", list(ORDERS))
        rtu.close()

    exc = connect(args.exceptions, FramerType.SOCKET)
    if exc:
        ok = exc.read_holding_registers(0, count=1, slave=1)
        check(not ok.isError() and ok.registers == [30], f"exceptions device normal read {ok}")
        for addr, code in [(10, 1), (20, 2), (30, 3), (40, 4), (60, 6), (100, 10), (110, 11)]:
            rr = exc.read_holding_registers(addr, count=1, slave=1)
            check(isinstance(rr, ExceptionResponse) and rr.exception_code == code,
                  f"exception {code:02X} at {addr}: {rr}")
        exc.close()

    if FAILURES:
        print(f"{len(FAILURES)} failure(s)", file=sys.stderr)
        for f in FAILURES:
            print("  ", f, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
