#!/usr/bin/env python3
"""Fast single-process simulation of federated forward-gradient training
(MNIST, mlp 784-1024-1024-10) to compare tangent schemes before building
them into fedfwd.

Each round every one of --clients iid clients draws a minibatch of --batch
from its 6000-image shard, and its minibatch gradient G_i is formed (by a
hand-written backprop: d = <G_i, v> equals the forward-mode JVP in exact
arithmetic). The client releases K scalars d_ik = <G_i, v_ik>, clipped to
[-clip, clip] and optionally quantized to --bits with unbiased stochastic
rounding. Coordinator: g = (1/N) sum_i (1/K) sum_k d_ik v_ik, then SGD
(optionally server momentum, Adam, or per-layer normalization) with a cosine
schedule lr -> min_lr.

Schemes (every tangent covers all parameters of all layers; entries +-1):
  A  independent rank-one: V_lk = u_lk a_lk^T, biases dense per tangent.
  B  grouped rank-one: per client/round/layer r output factors u_lj; tangent
     k uses u_{l, k mod r} and its own augmented input factor [a_lk; beta_lk]
     (bias tangent u_lj * beta_lk).
  B with --local-loss: layer 1 sees only a local loss through an auxiliary
     linear head 1024->10 on its ReLU output (stop-gradient into layer 2),
     layers 2-3 see the real loss; the aux head is a 4th tangent layer whose
     input is h1. One scalar per tangent (JVP of local + real loss).

  python3 bench/fg_sim.py --scheme B --K 512 --r 16 --bits 8 --lr 0.1
Prints the test accuracy every --eval-every rounds and a final JSON line.
Needs python3-torch and python3-numpy, MNIST IDX files in data/mnist/.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_idx(path):
    with open(path, 'rb') as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], 'big')
    ndim = magic & 0xff
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def load_mnist(d):
    def imgs(name):
        x = torch.from_numpy(load_idx(os.path.join(d, name)).astype(np.float32))
        x = x.reshape(x.shape[0], -1) / 255.0
        return (x - 0.1307) / 0.3081

    def labs(name):
        return torch.from_numpy(load_idx(os.path.join(d, name)).astype(np.int64))

    return (imgs('train-images-idx3-ubyte'), labs('train-labels-idx1-ubyte'),
            imgs('t10k-images-idx3-ubyte'), labs('t10k-labels-idx1-ubyte'))


def rad(*shape):
    return torch.randn(*shape).sign_()


def quantize(d, bits):
    """Unbiased stochastic rounding of d in [-1, 1] to 2^bits levels."""
    levels = (1 << bits) - 1
    x = (d + 1.0) * (levels / 2.0)
    lo = torch.floor(x)
    q = lo + (torch.rand_like(x) < (x - lo)).float()
    return q * (2.0 / levels) - 1.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--scheme', choices=['A', 'B', 'backprop'], default='B')
    p.add_argument('--K', type=int, default=128)
    p.add_argument('--r', type=int, default=16)
    p.add_argument('--bits', type=int, default=32, help='32 = no quantization')
    p.add_argument('--clip', type=float, default=1.0)
    p.add_argument('--lr', type=float, default=0.05)
    p.add_argument('--min-lr', type=float, default=0.002)
    p.add_argument('--rounds', type=int, default=2000)
    p.add_argument('--momentum', type=float, default=0.0)
    p.add_argument('--adam', action='store_true')
    p.add_argument('--adam-b2', type=float, default=0.999)
    p.add_argument('--adam-eps', type=float, default=1e-8)
    p.add_argument('--normalize', action='store_true',
                   help='per layer (W and b separately): g <- g / rms(g)')
    p.add_argument('--local-loss', action='store_true', help='scheme B only')
    p.add_argument('--clients', type=int, default=10)
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--eval-every', type=int, default=100)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--data', default=os.path.join(ROOT, 'data', 'mnist'))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.scheme == 'B' and args.K % args.r:
        sys.exit('K must be a multiple of r')

    xtr, ytr, xte, yte = load_mnist(args.data)
    torch.manual_seed(args.seed)
    sizes = [784, 1024, 1024, 10]
    lins = [torch.nn.Linear(sizes[i], sizes[i + 1]) for i in range(3)]
    Ws = [l.weight.detach().clone() for l in lins]
    bs = [l.bias.detach().clone() for l in lins]
    if args.local_loss:
        aux = torch.nn.Linear(1024, 10)
        Ws.append(aux.weight.detach().clone())
        bs.append(aux.bias.detach().clone())
    params = Ws + bs
    N, B, K = args.clients, args.batch, args.K
    perm = torch.randperm(xtr.shape[0])
    shard = xtr.shape[0] // N
    shards = [perm[i * shard:(i + 1) * shard] for i in range(N)]
    if args.momentum > 0:
        mom = [torch.zeros_like(t) for t in params]
    if args.adam:
        m1 = [torch.zeros_like(t) for t in params]
        m2 = [torch.zeros_like(t) for t in params]

    def evaluate():
        h = xte
        for l in range(3):
            h = h @ Ws[l].t() + bs[l]
            if l < 2:
                h = h.relu_()
        return (h.argmax(1) == yte).float().mean().item()

    def grads_factors(x, y):
        """Per-client activations P_l (N,B,in) and output deltas D_l (N,B,out)
        so that G_il = D_il^T P_il, g_bias_il = sum_b D_il."""
        P0 = x
        z1 = x @ Ws[0].t() + bs[0]
        h1 = z1.relu()
        z2 = h1 @ Ws[1].t() + bs[1]
        h2 = z2.relu()
        z3 = h2 @ Ws[2].t() + bs[2]
        onehot = torch.nn.functional.one_hot(y, 10).float()
        d3 = (z3.softmax(1) - onehot) / B
        d2 = (d3 @ Ws[2]) * (z2 > 0)
        Ps = [P0, h1, h2]
        Ds = [None, d2, d3]
        if args.local_loss:
            za = h1 @ Ws[3].t() + bs[3]
            da = (za.softmax(1) - onehot) / B
            Ds[0] = (da @ Ws[3]) * (z1 > 0)
            Ps.append(h1)
            Ds.append(da)
        else:
            Ds[0] = (d2 @ Ws[1]) * (z1 > 0)
        Ps = [t.reshape(N, B, -1) for t in Ps]
        Ds = [t.reshape(N, B, -1) for t in Ds]
        return Ps, Ds

    lay = len(Ws)
    hist = []
    t0 = time.time()
    clip_frac_acc = 0.0
    for rnd in range(1, args.rounds + 1):
        lr = args.min_lr + 0.5 * (args.lr - args.min_lr) * (
            1 + math.cos(math.pi * (rnd - 1) / max(1, args.rounds - 1)))
        idx = torch.cat([s[torch.randperm(shard)[:B]] for s in shards])
        Ps, Ds = grads_factors(xtr[idx], ytr[idx])
        gW, gb = [], []
        if args.scheme == 'backprop':
            for l in range(lay):
                gW.append(torch.einsum('nbo,nbi->oi', Ds[l], Ps[l]) / N)
                gb.append(Ds[l].sum((0, 1)) / N)
        elif args.scheme == 'A':
            tang = []
            d = torch.zeros(N, K)
            for l in range(lay):
                U = rad(N, Ds[l].shape[2], K)
                A = rad(N, Ps[l].shape[2], K)
                Bt = rad(N, Ds[l].shape[2], K)
                d += (torch.bmm(Ds[l], U) * torch.bmm(Ps[l], A)).sum(1)
                d += torch.bmm(Ds[l].sum(1, keepdim=True), Bt).squeeze(1)
                tang.append((U, A, Bt))
        else:  # B
            r = args.r
            m = K // r
            tang = []
            d = torch.zeros(N, r, m)
            for l in range(lay):
                U = rad(N, Ds[l].shape[2], r)
                # augmented input factors [a; beta]; tangent k = j*m + t uses
                # output factor j (a relabelling of "k mod r")
                A = rad(N * r, m, Ps[l].shape[2] + 1)
                DU = torch.bmm(Ds[l], U)  # (N,B,r)
                H = torch.cat([torch.bmm(DU.transpose(1, 2), Ps[l]),
                               DU.sum(1).unsqueeze(2)], 2)  # (N,r,in+1)
                d += torch.bmm(A, H.reshape(N * r, -1, 1)).reshape(N, r, m)
                tang.append((U, A))
            d = d.reshape(N, K)
        if args.scheme != 'backprop':
            clip_frac_acc += (d.abs() > args.clip).float().mean().item()
            d = d.clamp(-args.clip, args.clip)
            if args.bits < 32:
                d = quantize(d / args.clip, args.bits) * args.clip
            c = d / (N * K)
            for l in range(lay):
                if args.scheme == 'A':
                    U, A, Bt = tang[l]
                    out, inn = U.shape[1], A.shape[1]
                    Uc = (U * c.unsqueeze(1)).transpose(0, 1).reshape(out, N * K)
                    gW.append(Uc @ A.transpose(0, 1).reshape(inn, N * K).t())
                    gb.append((Bt * c.unsqueeze(1)).sum((0, 2)))
                else:
                    U, A = tang[l]
                    out, inn = U.shape[1], A.shape[2] - 1
                    S = torch.bmm(c.reshape(N * r, 1, m), A)  # (N*r,1,in+1)
                    G = U.transpose(0, 1).reshape(out, N * args.r) @ S.reshape(N * args.r, inn + 1)
                    gW.append(G[:, :inn].contiguous())
                    gb.append(G[:, inn].contiguous())
        grads = gW + gb
        if args.normalize:
            grads = [g / (g.pow(2).mean().sqrt() + 1e-12) for g in grads]
        if args.adam:
            b1 = args.momentum if args.momentum > 0 else 0.9
            for i, g in enumerate(grads):
                m1[i].mul_(b1).add_(g, alpha=1 - b1)
                m2[i].mul_(args.adam_b2).addcmul_(g, g, value=1 - args.adam_b2)
                mh = m1[i] / (1 - b1 ** rnd)
                vh = m2[i] / (1 - args.adam_b2 ** rnd)
                params[i].sub_(lr * mh / (vh.sqrt() + args.adam_eps))
        else:
            for i, g in enumerate(grads):
                if args.momentum > 0:
                    mom[i].mul_(args.momentum).add_(g)
                    g = mom[i]
                params[i].sub_(lr * g)
        if rnd % args.eval_every == 0 or rnd == args.rounds:
            acc = evaluate()
            if not math.isfinite(params[0].sum().item()):
                acc = 0.0
            hist.append((rnd, acc))
            print('round %d acc %.4f lr %.5f clipfrac %.3f wall %.0f' % (
                rnd, acc, lr, clip_frac_acc / rnd, time.time() - t0), flush=True)
            if acc <= 0.0:
                break
    res = dict(scheme=args.scheme, K=K, r=args.r if args.scheme == 'B' else None,
               bits=args.bits, lr=args.lr, min_lr=args.min_lr,
               momentum=args.momentum, adam=args.adam, normalize=args.normalize,
               local_loss=args.local_loss, rounds=args.rounds, seed=args.seed,
               acc={str(k): v for k, v in hist}, final=hist[-1][1] if hist else None,
               wall_s=round(time.time() - t0, 1))
    print(json.dumps(res), flush=True)


if __name__ == '__main__':
    main()
