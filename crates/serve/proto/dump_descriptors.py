"""Writes the egodriver contract as a FileDescriptorSet (alpasim_egodriver.binpb) and its text
form (alpasim_egodriver.txtpb), from the compiled modules of the installed
`carla-driver-interface` package (no .proto files ship with it).

    python dump_descriptors.py            # writes both files beside this script
    python dump_descriptors.py --check    # exits 1 when they differ from the installed package
"""

import sys
from importlib.metadata import version
from pathlib import Path

from google.protobuf import descriptor_pb2, text_format

from carla_driver_interface._proto import common_pb2, egodriver_pb2, sensorsim_pb2

HERE = Path(__file__).resolve().parent
# Dependencies first: the order protoc writes a set in.
MODULES = (common_pb2, sensorsim_pb2, egodriver_pb2)


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    for module in MODULES:
        fds.file.add().ParseFromString(module.DESCRIPTOR.serialized_pb)
    return fds


def main() -> int:
    fds = descriptor_set()
    binary = fds.SerializeToString(deterministic=True)
    text = (
        f"# carla-driver-interface {version('carla-driver-interface')}: "
        + ", ".join(f.name for f in fds.file)
        + "\n"
        + text_format.MessageToString(fds)
    ).encode()
    outputs = {"alpasim_egodriver.binpb": binary, "alpasim_egodriver.txtpb": text}
    if "--check" in sys.argv[1:]:
        stale = [n for n, b in outputs.items() if (HERE / n).read_bytes() != b]
        for name in stale:
            print(f"{name} differs from the installed package's descriptors")
        return 1 if stale else 0
    for name, data in outputs.items():
        (HERE / name).write_bytes(data)
        print(f"wrote {HERE / name} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
