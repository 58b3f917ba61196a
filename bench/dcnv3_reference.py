"""Our DCNv3 against the authors' code, same weights, same batch.

    python bench/dcnv3_reference.py --reference-src DIR --reference-python PY [--out JSON]

DIR holds the authors' ``DCNv3.py`` (salmon1802/DCNv3, ``src/``), fetched into a scratch
folder outside this repository and never copied into it; PY is a Python with ``fuxictr``
installed (their code imports it).  This process builds our LCN + ECN with random weights
(BatchNorm on, 1 and 2 heads), runs a batch of random field embeddings through our
``half_split`` input order, both networks, the head logits and Tri-BCE, and saves weights,
inputs and results; the reference process loads the same weights into the authors'
``ExponentialCrossNetwork`` / ``LinearCrossNetwork``, runs their ``DCNv3.forward`` and
``DCNv3.add_loss`` (their input reordering, their head averaging, their loss) on the same
field embeddings, and returns its logits, loss and weight gradients.  The JSON records the
largest differences, in train mode (BatchNorm on batch statistics, dropout 0) and eval mode.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REFERENCE_SIDE = r'''
import importlib.util, sys, types
import torch
from torch import nn
from fuxictr.pytorch.torch_utils import get_loss

spec = importlib.util.spec_from_file_location("authors_dcnv3", sys.argv[1] + "/DCNv3.py")
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
saved = torch.load(sys.argv[2])
out = {}
for case in saved["cases"]:
    c = saved[case]
    dim, heads = c["dim"], c["heads"]
    ecn = ref.ExponentialCrossNetwork(dim, c["deep"], layer_norm=True, batch_norm=True, net_dropout=0.0, num_heads=heads)
    lcn = ref.LinearCrossNetwork(dim, c["shallow"], layer_norm=True, batch_norm=True, net_dropout=0.0, num_heads=heads)
    for net, prefix, fc in ((ecn, "ecn", "dfc"), (lcn, "lcn", "sfc")):
        for i in range(len(net.w)):
            p = f"backbone.{prefix}.layers.{i}."
            net.w[i].weight.data.copy_(c["state"][p + "W.weight"])
            net.b[i].data.copy_(c["state"][p + "b"])
            for k in ("weight", "bias"):
                getattr(net.layer_norm[i], k).data.copy_(c["state"][p + "layer_norm." + k])
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(net.batch_norm[i], k).data.copy_(c["state"][p + "batch_norm." + k])
        getattr(net, fc).weight.data.copy_(c["state"][prefix + "_head.weight"])
        getattr(net, fc).bias.data.copy_(c["state"][prefix + "_head.bias"])
    embedding = ref.MultiHeadFeatureEmbedding.__new__(ref.MultiHeadFeatureEmbedding)
    nn.Module.__init__(embedding)
    embedding.num_heads = heads
    embedding.embedding_layer = lambda X: X  # the field embeddings [B, F, E] are the input here
    model = types.SimpleNamespace(get_inputs=lambda x: x, embedding_layer=embedding, ECN=ecn, LCN=lcn,
                                  output_activation=torch.sigmoid, loss_fn=get_loss("binary_crossentropy"),
                                  get_labels=lambda x: c["labels"].view(-1, 1))
    model.forward = lambda inputs: ref.DCNv3.forward(model, inputs)
    for mode in ("train", "eval"):
        ecn.train(mode == "train"); lcn.train(mode == "train")
        for net in (ecn, lcn):
            net.zero_grad()
        buffers = [(b, b.clone()) for net in (ecn, lcn) for b in net.buffers()]
        result = model.forward(c["fields"])
        for b, before in buffers:  # add_loss runs forward again: BatchNorm must update its statistics once
            b.copy_(before)
        loss = ref.DCNv3.add_loss(model, c["fields"])
        loss.backward()
        grads = {}
        for net, prefix in ((ecn, "ecn"), (lcn, "lcn")):
            for i in range(len(net.w)):
                grads[f"backbone.{prefix}.layers.{i}.W.weight"] = net.w[i].weight.grad.clone()
                grads[f"backbone.{prefix}.layers.{i}.b"] = net.b[i].grad.clone()
        out[f"{case}/{mode}"] = {"y_pred": result["y_pred"].view(-1), "y_d": result["y_d"].view(-1),
                                 "y_s": result["y_s"].view(-1), "loss": loss.detach(), "grads": grads,
                                 "input": embedding(c["fields"])}
torch.save(out, sys.argv[3])
'''


def our_side(path):
    import torch

    import recbole_mamba  # noqa: F401
    from recbole_mamba.model.dcnv3 import DCNv3Backbone, half_split, tri_bce_loss

    def bce(logits, labels):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)

    saved, ours = {"cases": []}, {}
    for name, heads, fields_n, emb in (("1 head", 1, 3, 16), ("2 heads", 2, 4, 16)):
        torch.manual_seed(7)
        dim = fields_n * emb // heads
        backbone = DCNv3Backbone(dim, 3, 0.0, shallow_layers=2, shallow_dropout=0.0, batch_norm=True, num_heads=heads)
        heads_lin = {"lcn_head": torch.nn.Linear(dim, 1), "ecn_head": torch.nn.Linear(dim, 1)}
        for layer in list(backbone.lcn.layers) + list(backbone.ecn.layers):  # BN statistics other than 0 / 1
            layer.batch_norm.running_mean.uniform_(-0.5, 0.5)
            layer.batch_norm.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(layer.layer_norm.weight, 1.0, 0.1)
            torch.nn.init.normal_(layer.batch_norm.weight, 1.0, 0.1)
        fields = 0.1 * torch.randn(512, fields_n, emb)  # embeddings of a trained model's size
        labels = (torch.rand(512) < 0.3).float()
        state = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
                 **{f"{h}.{k}": v for h, m in heads_lin.items() for k, v in m.state_dict().items()}}
        saved["cases"].append(name)
        saved[name] = {"dim": dim, "heads": heads, "deep": 3, "shallow": 2, "fields": fields, "labels": labels,
                       "state": {k: v.clone() for k, v in state.items()}}
        for mode in ("train", "eval"):
            backbone.train(mode == "train")
            backbone.zero_grad()
            x = half_split(fields, heads)
            x_lcn, x_ecn = backbone(x)
            lcn = heads_lin["lcn_head"](x_lcn).mean(dim=1).squeeze(-1)
            ecn = heads_lin["ecn_head"](x_ecn).mean(dim=1).squeeze(-1)
            loss = tri_bce_loss(bce, lcn, ecn, labels)
            loss.backward()
            grads = {f"backbone.{k}": p.grad.clone() for k, p in backbone.named_parameters()
                     if k.endswith("W.weight") or k.endswith(".b")}
            ours[f"{name}/{mode}"] = {"y_pred": torch.sigmoid((lcn + ecn) / 2).detach(), "y_d": torch.sigmoid(ecn).detach(),
                                      "y_s": torch.sigmoid(lcn).detach(), "loss": loss.detach(), "grads": grads,
                                      "input": x.detach()}
    torch.save(saved, path)
    return ours


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-src", required=True, help="folder holding the authors' DCNv3.py")
    parser.add_argument("--reference-python", required=True, help="a Python with fuxictr installed")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "dcnv3_reference.json"))
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        ours = our_side(os.path.join(tmp, "ours.pt"))
        subprocess.run([args.reference_python, "-c", REFERENCE_SIDE, os.path.abspath(args.reference_src),
                        os.path.join(tmp, "ours.pt"), os.path.join(tmp, "theirs.pt")], check=True)
        theirs = torch.load(os.path.join(tmp, "theirs.pt"))

    def diff(a, b):
        return float((a.detach().double() - b.detach().double()).abs().max())

    cases = {}
    for key, mine in ours.items():
        ref = theirs[key]
        cases[key] = {
            "input_order": diff(mine["input"], ref["input"]),
            **{f"max_abs_diff_{k}": diff(mine[k].view(-1), ref[k].view(-1)) for k in ("y_pred", "y_d", "y_s")},
            "loss_ours": float(mine["loss"]), "loss_reference": float(ref["loss"]),
            "max_abs_diff_loss": diff(mine["loss"], ref["loss"]),
            "max_rel_diff_grads": max(diff(mine["grads"][k], ref["grads"][k]) / (float(ref["grads"][k].abs().max()) + 1e-30)
                                      for k in ref["grads"]),
        }
    record = {
        "benchmark": "DCNv3: ours against the authors' code (salmon1802/DCNv3 src/DCNv3.py, run from a scratch folder), "
                     "same weights, same batch of 512 random field embeddings, BatchNorm on, dropout 0",
        "command": "python bench/dcnv3_reference.py --reference-src <scratch>/DCNv3/src --reference-python <python with fuxictr>",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
        "cases": cases,
        "notes": ["field embeddings ~N(0, 0.1^2): with random weights and larger inputs the ECN's logits saturate, "
                  "and the authors' BCE on sigmoid outputs (log clamped at -100) then differs from ours, "
                  "BCE on logits, the numerically stable form of the same loss"],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
