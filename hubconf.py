"""torch.hub entry points for cyclegan_edu.

    import torch
    G = torch.hub.load('cyclegan-edu/cyclegan_edu', 'resnet_generator', pretrained='horse2zebra')  # official weights
    G = torch.hub.load('cyclegan-edu/cyclegan_edu', 'resnet_generator', pretrained='user/repo')    # a Hugging Face Hub repo
    G = torch.hub.load('cyclegan-edu/cyclegan_edu', 'resnet_generator', ngf=32, netG='resnet_6blocks')  # untrained
    D = torch.hub.load('cyclegan-edu/cyclegan_edu', 'patchgan_discriminator')

torch.hub imports this file from the repository it downloaded, so `cyclegan_edu` below is that copy of the package.
"""
dependencies = ['torch', 'torchvision', 'numpy', 'PIL', 'tqdm']


def resnet_generator(pretrained: str | None = None, **kwargs):
    """CycleGAN's ResNet generator.

    pretrained=None: a freshly initialised generator; kwargs go to `cyclegan_edu.models.define_G` (input_nc, output_nc,
    ngf, netG='resnet_9blocks' or 'resnet_6blocks', norm, use_dropout, init_type, init_gain).
    pretrained='horse2zebra' (any name in `cyclegan_edu.inference.PRETRAINED_MODELS`): the official pretrained generator,
    downloaded once and returned in eval mode; kwargs go to `load_pretrained` (cache_dir, url, device).
    pretrained='user/name': a generator shared on the Hugging Face Hub (needs huggingface_hub and safetensors); kwargs
    go to `cyclegan_edu.hub.load_generator_from_hub` (revision, device, token, cache_dir).
    """
    if pretrained is None:
        from cyclegan_edu.models import define_G
        return define_G(**kwargs)
    if '/' in pretrained:
        from cyclegan_edu.hub import load_generator_from_hub
        return load_generator_from_hub(pretrained, **kwargs)
    from cyclegan_edu.inference import load_pretrained
    return load_pretrained(pretrained, **kwargs)


def patchgan_discriminator(**kwargs):
    """CycleGAN's 70x70 PatchGAN discriminator, freshly initialised; kwargs go to `cyclegan_edu.models.define_D`
    (input_nc, ndf, netD='basic', 'n_layers' or 'pixel', n_layers_D, norm, init_type, init_gain)."""
    from cyclegan_edu.models import define_D
    return define_D(**kwargs)
