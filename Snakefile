# Thin entry point: `snakemake --cores N` from the repository root runs the workflow in workflow/.
# Other workflows import workflow/Snakefile as a module (see README, "Reusing the rules").


include: "workflow/Snakefile"


# Rules from an include never become the default target, so name it here.
rule default:
    default_target: True
    input:
        rules.all.input,
    localrule: True
