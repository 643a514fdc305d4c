"""LACP (Lee & Byun, ICCV 2021), the base locator of the paper, rebuilt from the authors' public code.

`locate.method: lacp` trains it on the points and writes its raw proposals
for TSPNet (../shared/docs/LACP.md is the behaviour rebuilt, section by section):

    config.py      params.yaml `locate.lacp`, checked
    model.py       the network (section 2), many videos packed in one forward
    pseudo.py      pseudo background and action points (3.2)
    search.py      the optimal sequence search (3.3)
    losses.py      the loss terms and the pseudo-label runs they read (4)
    train.py       training and when pseudo labels reach the loss (3.4, 5)
    proposals.py   raw proposals, and LACP's own NMS (6)
    checkpoint.py  weights in the authors' layout, the released model (9)
"""
