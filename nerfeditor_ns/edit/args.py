"""The command-line arguments of ``ns-edit`` and ``ns-edit train-mapper`` (tyro dataclasses, one docstring per field).

Standard library only (plus the edit errors): ``ns-edit --help`` parses these without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional

from nerfeditor_ns.edit.errors import EditError

EDIT_MODES = ("prompt", "reference_image", "edited_image", "style_image", "direction")

#: ns-edit flags overriding the finetune's model loss multipliers (NerfEditorModelConfig fields) -> the paper's term
FINETUNE_LOSS_FLAGS = {"original_loss_mult": "L_ori", "background_loss_mult": "L_br", "depth_loss_mult": "L_depth"}


@dataclass
class NetworkArgs:
    """Network files (local paths only; nothing is downloaded). Each can also be set once in an environment variable
    (NERFEDITOR_GENERATOR, ...) or in ~/.config/nerfeditor/networks.yml (`generator: /path`)."""

    generator: Optional[Path] = None
    """StyleGAN2 generator: NVIDIA .pkl (stylegan2-ada / stylegan3's StyleGAN2) or rosinality .pt. Required.
    Env: NERFEDITOR_GENERATOR."""
    encoder: Optional[Path] = None
    """e4e encoder checkpoint. Without it the frontal view is inverted by optimisation (slower). Env: NERFEDITOR_ENCODER."""
    arcface: Optional[Path] = None
    """ArcFace IR-SE50 weights (model_ir_se50.pth) for the identity loss; off without it. Env: NERFEDITOR_ARCFACE."""
    clip: Optional[Path] = None
    """open_clip checkpoint file (needed by --prompt). Env: NERFEDITOR_CLIP."""
    clip_model: Optional[str] = None
    """open_clip architecture name of the --clip file (default ViT-B-32). Env: NERFEDITOR_CLIP_MODEL."""
    vgg: Optional[Path] = None
    """torchvision VGG16 state dict for perceptual losses and the hidden mapper backbone; off / slim backbone without
    it. Env: NERFEDITOR_VGG."""
    style_generator: Optional[Path] = None
    """Art StyleGAN2 (finetuned from --generator) used by --style-image. Env: NERFEDITOR_STYLE_GENERATOR."""
    hidden_mapper: Optional[Path] = None
    """Trained hidden mapper file; default: the one cached for this generator (trained on first use).
    Env: NERFEDITOR_HIDDEN_MAPPER."""
    network_config: Optional[Path] = None
    """YAML file with network paths (default $NERFEDITOR_CONFIG or ~/.config/nerfeditor/networks.yml)."""
    cache_dir: Optional[Path] = None
    """Cache root for trained hidden mappers (default $NERFEDITOR_CACHE or ~/.cache/nerfeditor-ns)."""


@dataclass(kw_only=True)
class EditArgs(NetworkArgs):
    """Edit a trained nerfeditor run and write the result as a NEW run (the original is never modified).
    Give exactly one EDIT: --prompt, --reference-image, --edited-image, --style-image or --direction.
    `ns-edit train-mapper --help` trains the hidden mapper of a generator ahead of time; the steps every edit of a run
    shares are cached beside it (`ns-edit cache --help` lists and removes them)."""

    load_config: Path
    """config.yml of the trained nerfeditor run to edit (outputs/<scene>/nerfeditor/<run>/config.yml)."""

    # ---- the edit (exactly one) ----
    prompt: Optional[str] = None
    """EDIT: text prompt, CLIP-guided optimisation of the frontal code, StyleCLIP-style (the paper does not say how it
    edits from text) (e.g. "tanned skin"). Needs --clip."""
    reference_image: Optional[Path] = None
    """EDIT: reference image; its inverted code is style-mixed into the frontal code from --mix-layer on."""
    edited_image: Optional[Path] = None
    """EDIT: your own 2D edit of the frontal view, inverted into the GAN. The frontal crop to edit is written as
    frontal.png into every edit run (and its .partial directory) at the GAN's resolution."""
    style_image: Optional[Path] = None
    """EDIT: 3D style transfer from a painting (paper Sec. 4.5, App. D): every view of the captured subject is mapped
    into the hidden space of --style-generator (an art StyleGAN2) by its hidden mapper and drawn with the painting's
    style codes (--style-level, --style-strength). Needs --style-generator only (no --generator)."""
    direction: Optional[str] = None
    """EDIT: latent direction with a strength: `pc:INDEX:STRENGTH` (component of the decomposition, e.g. pc:7:+3)
    or `FILE.pt:STRENGTH` (a saved direction), each optionally limited to the W+ rows [START, END) with a
    `:START-END` suffix (e.g. pc:0:-2:0-4)."""

    edits_file: Optional[Path] = None
    """Several edits of this run in one command: a text file with one edit per line in ns-edit's own flags (e.g.
    `--prompt "tanned skin"`, or `--direction pc:0:-2 --output-dir outputs/darker`); the command's other flags are
    shared by every line, and a line may override them. Every line is checked before the first edit starts; the edits
    then run one after another in this process and share the run's scene cache. Blank lines and lines starting with
    # are skipped. Re-running the command resumes: a line whose --output-dir already holds the same finished edit is
    skipped."""

    # ---- output ----
    output_dir: Optional[Path] = None
    """Directory of the new run (default: beside the original run, named <run>-edit-<kind>-<hash of the edit>, so
    re-running the same command resumes an interrupted edit)."""
    overwrite: bool = False
    """Replace --output-dir if it exists (only after the new edit has finished)."""
    keep_cache: bool = False
    """Keep the per-step cache (cache/) in the finished run."""

    # ---- geometry ----
    frontal_camera: Optional[int] = None
    """Index of the training camera used as the frontal view (default: chosen automatically)."""
    in_domain_yaw: Optional[float] = None
    """Half-width (degrees) of the in-domain yaw range around the frontal view (the GAN's pose range). Default: 30,
    or the largest yaw the capture reaches if that is less."""
    in_domain_pitch: float = 20.0
    """Half-width (degrees) of the in-domain pitch range."""
    num_in_yaw: int = 7
    """In-domain views along yaw (the adjustor's training poses and the in-domain guide set)."""
    num_in_pitch: int = 3
    """In-domain views along pitch."""
    num_out_domain: int = 8
    """Out-of-domain views (rest of the orbit, beyond the in-domain yaw); 0 = none. None are made (with a note)
    when no training view lies beyond the in-domain yaw range: every view then gets an in-domain guide."""
    render_scale: float = 1.0
    """Scale of the rendered views relative to the training images (lower it if out of memory or slow)."""
    box_scale: float = 1.0
    """Scale of the 3D box that defines the crops (enlarge if the face is cut off; shrink if it is too small)."""
    face_alignment: Literal["silhouette", "landmarks", "auto", "none"] = "silhouette"
    """How the frontal crop is aligned: "silhouette" (the head's outline in the frontal render), "landmarks"
    (FFHQ's recipe from eye and mouth landmarks, MediaPipe face mesh: the `faces` extra), "auto" (landmarks when the
    extra is installed and a face is found, else the silhouette, with a note), "none" (no face layout: the crop
    frames the whole subject and the edit region is the whole subject box; for a subject that is not a face, e.g.
    --style-image with an art generator of any class). Recorded in edit.json."""

    # ---- the 2D edit ----
    mix_layer: int = 4
    """--reference-image: first W+ layer taken from the reference (lower = more of the reference's structure)."""
    style_level: Optional[int] = None
    """--style-image: the abstraction level (App. D, Fig. 15): the hidden-map resolution, i.e. the generator block,
    the captured views are mapped to by the hidden mapper. A shallow block (low resolution, e.g. 32 of a 1024
    generator) lets the art generator repaint more of the subject (more abstract, closer to the painting's look); a
    deep block (e.g. 128) keeps the subject's detail and takes mostly the painting's colours. One of the hidden
    mapper's trained resolutions (default: its lowest). Recorded in edit.json."""
    style_strength: float = 1.0
    """--style-image: the strength, the mixing factor s of App. D between the subject's own code in the art
    generator (its frontal crop inverted there) and the painting's: w = (1 - s) w_subject + s w_painting. 0 = the
    subject's own code (no style), 1 = the painting's style codes. Recorded in edit.json."""
    style_guides: Literal["change", "paste"] = "change"
    """--style-image: how the stylised crops G_style(H(crop), w) become guide images. "change": only the style's
    change G_style(H(crop), w) - G_style(H(crop), w_subject) is added to the render (the subject's layout and
    detail stay the render's; strength 0 gives the renders exactly); "paste": the stylised crop itself is pasted
    into the render through the foreground mask (the paper's I_out as is; its layout is only as good as the hidden
    mapper's reconstruction)."""
    projection_steps: int = 200
    """Optimisation steps of projection (inversion without encoder, and of reference / edited / style images)."""
    adjustor_steps: int = 200
    """Training steps of the latent code adjustor (Eq. 1)."""
    adjustor_batch: int = 4
    """Poses per adjustor step (lower it if out of memory)."""
    generator_finetune_steps: int = 100
    """Steps of generator finetuning (pivotal tuning of a copy of the generator's synthesis weights on the in-domain
    crops at the adjustor's codes, with a locality regulariser; paper Sec. 4, Tab. 5), after the adjustor. The
    finetuned generator makes the in-domain guides and is G_style for the out-of-domain ones. 0 = the paper's
    "latent code adjustor w/o finetuning" ablation."""
    num_components: int = 32
    """k: number of style components of the differentiable decomposition (Eqs. 7-9); at most the GAN's w_dim."""
    fixed_basis: bool = False
    """Hold the adjustor's basis V fixed at the plain PCA basis of W instead of training the decomposition with the
    adjustor: the paper's "w/o differentiable" ablation (Tab. 5). Recorded in edit.json."""
    clip_steps: int = 100
    """--prompt: CLIP optimisation steps."""
    mapper_steps: int = 2000
    """Training steps of the hidden mapper when none is cached for the generator (the paper trains 20,000; run
    `ns-edit train-mapper` once ahead of time for that)."""
    out_of_domain_guides: bool = True
    """Guide the out-of-domain views (Sec. 3.3; how: --out-of-domain-change). --no-out-of-domain-guides is the paper's
    "w/o hidden mapper" ablation (Fig. 9): only the in-domain views are guided; the out-of-domain views are still
    rendered and evaluated. Recorded in edit.json."""
    in_domain_change: Literal["auto", "generator", "colour-map"] = "auto"
    """How the in-domain guides get the edit's change: "generator" moves the generator's own per-pixel change
    (G'(edited code) - G'(unedited code) at the view's pose; the paper's Eq. 1 guides, which can change shape, e.g.
    an expression); "colour-map" applies the in-domain change as a function of colour (the same fitted map as
    --out-of-domain-change colour-map) to the in-domain renders: colour edits only (skin, hair), the same change
    in every view, without the generator's blur or misplaced detail. "auto": colour-map for --reference-image
    (style mixing takes the reference's colour layers) and generator for the other modes."""
    out_of_domain_change: Literal["colour-map", "hidden-mapper"] = "colour-map"
    """How the out-of-domain guides get the edit's change: "colour-map" fits the in-domain change as a function of
    colour (quadratic RGB map over the foreground of the in-domain crop pairs) and applies it to the out-of-domain
    renders at full resolution (profiles get the same skin / hair colour change); "hidden-mapper" is the paper's
    Sec. 3.3 path (G_style(H(crop), w_style) - G_style(H(crop), w)), which can carry shape changes but needs a
    generator and hidden mapper good enough for the capture."""
    colour_map_region: Literal["auto", "face", "crop"] = "auto"
    """Which pixels of the in-domain crop pairs the colour map (--in-domain-change / --out-of-domain-change
    colour-map) is fitted on: "crop", the crop's whole foreground (skin and hair colour), or "face", the inner face
    of the aligned crop (forehead to chin: skin tone; hair and background colours are held to the face's colour
    range), which stays right when the generator reproduces the render poorly around the face. "auto": "crop" when
    the finetuned generator reproduces the in-domain render crops to a mean error <= 0.065, else "face" (recorded in
    edit.json)."""

    # ---- finetune ----
    finetune_steps: Optional[int] = None
    """NeRF finetuning steps (default: 1/4 of the original run's steps)."""
    finetune_lr_scale: float = 0.1
    """Learning rates of the finetune, relative to where the original run's schedule left them (nerfacto's schedule is
    still near its initial rate after a short run). The original scene is frozen during an edit, so this only sets how
    fast the alpha = 1 residual learns (face capture, 64 px: a null edit keeps 57 dB at 0.1, 68 dB at 1.0; a reference
    edit changes the subject by 0.139 / 0.145)."""
    edit_region: Literal["box", "everywhere"] = "box"
    """Where the edited scene may differ from the original: "box" gates the NeRF's residual by the 3D subject box (the
    same box that defines the crops and the foreground masks, fading out over a thin shell), so everything outside it
    stays the original exactly; "everywhere" lets the residual act anywhere, held only by the losses."""
    original_loss_mult: Optional[float] = None
    """Weight of L_ori (Eq. 4) in this edit's finetune (default: the run's pipeline.model.original_loss_mult);
    0 = the paper's "w/o L_ori" ablation (Tab. 5). Saved in the new run's config.yml and edit.json only."""
    background_loss_mult: Optional[float] = None
    """Weight of L_br (Eq. 3) in this edit's finetune (default: the run's pipeline.model.background_loss_mult);
    0 = "w/o L_br" (with --original-loss-mult 0: "w/o L_ori & L_br")."""
    depth_loss_mult: Optional[float] = None
    """lambda, the weight of L_depth (Eq. 5) in this edit's finetune (default: the run's
    pipeline.model.depth_loss_mult); 0 = "w/o L_depth"."""
    freeze_original: Optional[bool] = None
    """Freeze the alpha = 0 branch of the field during this edit's finetune (default: the run's
    pipeline.model.freeze_original, on). While it is frozen L_ori is exactly 0, so compare "w/o L_ori" with the
    paper's setting under --freeze-original False."""
    render_chunk: int = 4096
    """Rays per forward pass when rendering (lower it if out of memory)."""
    vis: Literal["none", "tensorboard"] = "none"
    """Logging during finetuning."""
    video_frames: int = 24
    """Frames of the before/after turntable video."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for the GAN side (the NeRF follows the run's machine config when 'auto')."""
    seed: int = 0
    """Random seed."""

    # ---- masks ----
    mask_dir: Optional[Path] = None
    """Folder of foreground masks (white = subject), one per training image, named like the capture's images (any
    image extension). Default: the capture's <data>/foreground_masks/ when it exists, else masks derived from the
    NeRF. Carried to the edit's views through the nearest training camera; see the README (Foreground masks)."""

    # ---- domain check ----
    force: bool = False
    """Edit even when the domain check finds that the generator cannot represent the frontal crop (the crop's
    inversion error is far above the generator's error on its own samples). Recorded in edit.json."""
    max_inversion_error_ratio: Optional[float] = None
    """Domain check threshold: the largest allowed ratio of the frontal crop's inversion error to the generator's
    error on its own samples (default: the value calibrated on the shipped face generator, see the README)."""

    def finetune_loss_weights(self) -> Dict[str, float]:
        """The finetune's model loss multipliers this edit overrides (name in NerfEditorModelConfig -> value)."""
        return {name: float(getattr(self, name)) for name in FINETUNE_LOSS_FLAGS if getattr(self, name) is not None}

    def ablations(self) -> List[str]:
        """The paper's ablations (Tab. 5, Fig. 9) this edit runs, by their names in the paper (for edit.json)."""
        out = []
        if self.fixed_basis:
            out.append("w/o differentiable decomposition")
        if self.generator_finetune_steps == 0:
            out.append("w/o generator finetuning")
        weights = self.finetune_loss_weights()
        for name, label in FINETUNE_LOSS_FLAGS.items():
            if weights.get(name) == 0.0:
                out.append(f"w/o {label}")
        if not self.out_of_domain_guides:
            out.append("w/o hidden mapper")
        return out

    def edit_mode(self) -> str:
        """The single EDIT given (refuses none / several)."""
        given = [m for m in EDIT_MODES if getattr(self, m) is not None]
        flags = ", ".join("--" + m.replace("_", "-") for m in EDIT_MODES)
        if not given:
            raise EditError("No edit given.", f"add exactly one of {flags}.")
        if len(given) > 1:
            raise EditError(
                f"Several edits given ({', '.join('--' + m.replace('_', '-') for m in given)}).",
                "give exactly one edit per run; chain edits by editing the new run again.",
            )
        return given[0]


@dataclass
class TrainMapperArgs:
    """Train the hidden mapper (paper Alg. 1) for a generator ahead of time and store it in the cache, so that the
    first out-of-domain edit does not have to. Network paths may also come from NERFEDITOR_* environment variables or
    ~/.config/nerfeditor/networks.yml, as for ns-edit."""

    generator: Optional[Path] = None
    """StyleGAN2 generator to train the mapper for (required). Env: NERFEDITOR_GENERATOR."""
    vgg: Optional[Path] = None
    """torchvision VGG16 state dict for the mapper backbone; without it (or with --slim) the slim backbone is used.
    Env: NERFEDITOR_VGG."""
    network_config: Optional[Path] = None
    """YAML file with network paths (default $NERFEDITOR_CONFIG or ~/.config/nerfeditor/networks.yml)."""
    cache_dir: Optional[Path] = None
    """Cache root for trained hidden mappers (default $NERFEDITOR_CACHE or ~/.cache/nerfeditor-ns)."""
    steps: int = 20000
    """Training steps (paper App. C: 20,000)."""
    batch: int = 4
    """Images per step (lower it if out of memory)."""
    resolution: Optional[int] = None
    """Feature resolution the mapper predicts (default: the generator's default, 32/64/128)."""
    slim: bool = False
    """Use the slim backbone (no VGG16 file needed; for tests and quick runs)."""
    output: Optional[Path] = None
    """Write the trained mapper here as well (default: only the cache)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device."""
    seed: int = 0
    """Random seed."""


@dataclass
class AlphaConfigArgs:
    """Write a copy of an edited run's config.yml that opens at another style alpha. nerfstudio's tools (ns-render,
    ns-eval, ns-export, ns-viewer) take no model options and render a run at its config's default alpha, which is 1
    (the edit) for runs written by ns-edit; ``--alpha 0`` gives a config that renders the original scene."""

    load_config: Path
    """config.yml of a run written by ns-edit (outputs/.../<run>-edit-<mode>-<time>/config.yml)."""
    alpha: float = 0.0
    """Style alpha the copy opens at: 0 = the original scene, 1 = the edit, in between a blend."""
    output: Optional[Path] = None
    """Where to write the copy (default: config_alpha<ALPHA>.yml next to --load-config)."""
