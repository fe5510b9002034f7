"""A foreign client: Python with Debian's python3-grpcio and stubs generated
from proto/ditserve/v1/generation.proto by protoc and grpc_python_plugin.

usage: python_client.py PROTO_ROOT HOST:PORT OUT_DIR
Calls Generate, checks that the image is a valid PNG of the reported size
(signature, IHDR, CRCs, and the zlib stream inflates to height*(1+3*width)
bytes), and prints one line: "ok WIDTHxHEIGHT seed N bytes B".
"""
import os
import struct
import subprocess
import sys
import zlib


def main():
    proto_root, address, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(
        ["protoc", f"--proto_path={proto_root}", f"--python_out={out_dir}",
         f"--grpc_out={out_dir}", "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
         os.path.join(proto_root, "ditserve/v1/generation.proto")],
        check=True)
    sys.path.insert(0, out_dir)
    import grpc
    from ditserve.v1 import generation_pb2, generation_pb2_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 1 << 30)])
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    info = stub.GetInfo(generation_pb2.GetInfoRequest(), timeout=30)
    request = generation_pb2.GenerateRequest(prompt="a yellow star", num_inference_steps=2,
                                             seed=5, output_format=generation_pb2.IMAGE_FORMAT_PNG)
    response = stub.Generate(request, timeout=300)
    assert len(response.images) == 1, response
    image = response.images[0]
    data = image.data
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, idat, width, height = 8, b"", None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color == 2, (depth, color)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert (width, height) == (image.width, image.height) == (info.default_size, info.default_size)
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    assert image.seed == 5
    print(f"ok {width}x{height} seed {image.seed} bytes {len(data)}")


if __name__ == "__main__":
    main()
