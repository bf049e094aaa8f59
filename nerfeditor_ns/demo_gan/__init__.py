"""A small StyleGAN2 trainer (generator + residual discriminator) for the demo's shipped 32 px face generator
(``tests/data/face_gan32.pt``, ``scripts/train_face_gan.py``). Not part of the paper's method: NeRFEditor uses a
pre-trained StyleGAN; this package only makes one that trains on a CPU. Files are written in the rosinality format
by :func:`nerfeditor_ns.gan.checkpoints.save_rosinality_checkpoint`.
"""
