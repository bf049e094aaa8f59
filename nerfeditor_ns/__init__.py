"""nerfeditor-ns: NeRFEditor (mutual NeRF-StyleGAN training for 3D scene editing) as a nerfstudio plugin.

Importing this package is deliberately cheap: it imports neither nerfstudio's heavy modules nor any network
(StyleGAN, CLIP, VGG). Subpackages:

- ``nerfeditor_ns.nerf``: conditional NeRF model, guide-set data manager, editing losses (paper Sec. 3.1, 3.4).
- ``nerfeditor_ns.gan``: StyleGAN2 loaders, encoders, decomposition, latent code adjustor, hidden mapper (Sec. 3.2, 3.3).
- ``nerfeditor_ns.edit``: the ``ns-edit`` command (the steps of the paper's Fig. 2).
- ``nerfeditor_ns.eval``: edit metrics.
- ``nerfeditor_ns.method_configs``: the nerfstudio presets ``nerfeditor`` and ``nerfeditor-tiny``.
- ``nerfeditor_ns.io_utils``: atomic writes, file hashes, image conversion, progress bars.
- ``nerfeditor_ns.demo`` / ``nerfeditor_ns.demo_gan``: the built-in demo and the small GAN trainer behind its generator.
"""

__version__ = "0.1.0"
