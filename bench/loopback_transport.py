"""Benchmark: moving tensors between two processes on this machine, Gloo
(PyTorch's, the same library the engine's CPU communicators use) against a
plain TCP socket on loopback. Each of ROUNDS rounds times 20 exchanges of
MB megabytes each way (both ranks send and receive at once, as a ring step
or a 2-rank all-to-all does) and prints the median.

usage: loopback_transport.py [MB [ROUNDS]]     (run with the setup venv's python3)
"""
import os
import socket
import sys
import time

import torch
import torch.distributed as dist


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_rank(rank, port, nbytes, rounds, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x = torch.zeros(nbytes // 4)
    y = torch.empty(nbytes // 4)
    for _ in range(rounds):
        times = []
        for _ in range(20):
            dist.barrier()
            start = time.perf_counter()
            recv = dist.irecv(y, 1 - rank)
            send = dist.isend(x, 1 - rank)
            send.wait()
            recv.wait()
            times.append(time.perf_counter() - start)
        if rank == 0:
            out.append(sorted(times)[len(times) // 2])
    dist.destroy_process_group()


def socket_exchange(nbytes, rounds):
    """Both ends send nbytes and receive nbytes at once, over one connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        conn = socket.create_connection(("127.0.0.1", port))
    else:
        conn, _ = listener.accept()
    data = bytearray(nbytes)
    sink = memoryview(bytearray(nbytes))
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(20):
            conn.sendall(b"s")  # a barrier: each waits for the other's byte
            conn.recv(1)
            start = time.perf_counter()
            if pid == 0:
                conn.sendall(data)
                got = 0
                while got < nbytes:
                    got += conn.recv_into(sink[got:], nbytes - got)
            else:
                got = 0
                while got < nbytes:
                    got += conn.recv_into(sink[got:], nbytes - got)
                conn.sendall(data)
            times.append(time.perf_counter() - start)
        medians.append(sorted(times)[len(times) // 2])
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return medians


def main():
    mb = float(sys.argv[1]) if len(sys.argv) > 1 else 4
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    nbytes = int(mb * 1024 * 1024) // 4 * 4
    port = free_port()
    pid = os.fork()
    if pid == 0:
        gloo_rank(1, port, nbytes, rounds, [])
        os._exit(0)
    medians = []
    gloo_rank(0, port, nbytes, rounds, medians)
    os.waitpid(pid, 0)
    for m in medians:
        print(f"gloo   exchange {mb:g} MB each way: {m * 1e3:.2f} ms ({2 * nbytes / m / 1e9:.2f} GB/s both ways)")
    # A plain socket cannot send and receive at once in one thread: one end
    # sends first, so this is the serial cost of the same bytes.
    for m in socket_exchange(nbytes, rounds):
        print(f"socket exchange {mb:g} MB each way, one way after the other: {m * 1e3:.2f} ms "
              f"({2 * nbytes / m / 1e9:.2f} GB/s)")


if __name__ == "__main__":
    main()
