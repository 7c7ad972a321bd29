"""A Modbus server hazgate did not write (pymodbus), with a known register map.

Usage: modbus_server.py tcp PORT | rtu SERIAL_PATH

Register map (0-based protocol addresses, unit 1):
  holding 0-1   f32  1.5        ABCD   0x3FC0 0x0000
  holding 2-3   f32  -2.25      CDAB   0x0000 0xC010
  holding 4     i16  -300              0xFED4
  holding 5     u16  1234  (x0.01 = 12.34)
  holding 6-7   u32  70000      ABCD   0x0001 0x1170
  holding 8-11  f64  6.02214    ABCD
  holding 12+   not mapped: exception 02
The serial server runs 19200 8N1 (a pty takes no parity setting from pyserial).
  input   0     u16  42
  coils   0-3   1 0 1 1
  discrete 0-1  0 1
Writes to holding 0-11 and coils 0-3 are stored.
"""
import asyncio
import struct
import sys

from pymodbus import FramerType
from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def holding():
    regs = []
    regs += words("f", 1.5)
    cdab = words("f", -2.25)
    regs += [cdab[1], cdab[0]]
    regs += words("h", -300)
    regs += [1234]
    regs += words("I", 70000)
    regs += words("d", 6.02214)
    assert len(regs) == 12
    return regs


def context():
    # pymodbus adds 1 to every protocol address before it reaches the block.
    slave = ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(1, holding()),
        ir=ModbusSequentialDataBlock(1, [42]),
        co=ModbusSequentialDataBlock(1, [1, 0, 1, 1]),
        di=ModbusSequentialDataBlock(1, [0, 1]),
    )
    return ModbusServerContext(slaves=slave, single=True)


async def main():
    kind, where = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    if kind == "tcp":
        await StartAsyncTcpServer(context=context(), address=("127.0.0.1", int(where)))
    else:
        await StartAsyncSerialServer(context=context(), port=where, framer=FramerType.RTU,
                                     baudrate=19200, bytesize=8, parity="N", stopbits=1)


asyncio.run(main())
