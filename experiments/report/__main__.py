from longrange.experiments.report.build import main

main()
