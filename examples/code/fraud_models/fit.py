"""A training function of its own: ``training: {entrypoint: "fraud_models.fit:fit", params: {...}}``.

The trainer hands it a run (the prepared splits, a checkpoint, a metrics
logger, the spec's params) and publishes the module it returns: export,
card, events and lineage stay the trainer's.
"""

import torch
from torch import nn

from fraud_models.residual import build

LOSSES = {"binary": nn.BCEWithLogitsLoss, "multiclass": nn.CrossEntropyLoss, "regression": nn.MSELoss}


def fit(run) -> nn.Module:
    params = {"epochs": 5, "lr": 0.005, "batch_size": 256, "network": {}, **run.params}
    net = build(run.schema, params["network"]).to(run.device)
    optimiser = torch.optim.Adam(net.parameters(), lr=params["lr"])
    loss_fn = LOSSES[run.schema.task]()
    first_epoch = 0
    saved = run.checkpoint.load()  # the state of an earlier attempt of this run, if it was stopped
    if saved is not None:
        net.load_state_dict(saved["net"])
        optimiser.load_state_dict(saved["optimiser"])
        first_epoch = saved["epoch"]
    data = run.train.to(run.device)
    for epoch in range(first_epoch + 1, params["epochs"] + 1):
        if run.should_stop():
            break  # the trainer resumes the run from the last checkpoint
        net.train()
        total = 0.0
        for index in torch.randperm(len(data)).split(params["batch_size"]):
            loss = loss_fn(net(data.numeric[index], data.categorical[index]), data.label[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(index)
        run.log(epoch, total / len(data))
        run.checkpoint.save({"net": net.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch})
    return net
